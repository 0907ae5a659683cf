"""rl-nav2d's batched environment, its seeded task stream, returns to go and the linear feature baseline."""

from __future__ import annotations

import torch

from metaloop.tasks.rl import MAX_SPEED, Nav2DTasks, linear_baseline, nav2d_rollouts, returns_to_go, rollout_seed


def test_nav2d_steps_clip_and_reward_the_distance_after_the_step():
    goals = torch.tensor([[0.3, -0.2], [-0.5, 0.5]])
    actions = torch.tensor([[0.05, 0.5], [-1.0, 0.02]])  # the second coordinate of task 0, the first of task 1 clip

    found = nav2d_rollouts(lambda obs, t: actions[:, None, :].expand(2, 3, 2), goals, 3, 4)
    assert found.obs.shape == (2, 3, 4, 2) and found.rewards.shape == (2, 3, 4)
    step = actions.clamp(-MAX_SPEED, MAX_SPEED)
    for t in range(4):
        assert torch.allclose(found.obs[:, :, t], (t * step)[:, None, :].expand(2, 3, 2))
        expected = -((t + 1) * step - goals).norm(dim=-1)
        assert torch.allclose(found.rewards[:, :, t], expected[:, None].expand(2, 3))
    assert torch.allclose(found.returns, found.rewards.sum(-1))


def test_nav2d_passes_the_step_index_and_observations_to_the_policy():
    seen = []

    def act(obs, t):
        seen.append((t, obs.clone()))
        return torch.full_like(obs, 0.01)

    nav2d_rollouts(act, torch.zeros(1, 2), 2, 3)
    assert [t for t, _ in seen] == [0, 1, 2]
    assert torch.allclose(seen[2][1], torch.full((1, 2, 2), 0.02))


def test_tasks_are_seeded_by_seed_split_and_index():
    train = Nav2DTasks(seed=0, split="train")
    batch = train.batch(5, 3)
    assert batch.support_x.shape == (3, 1, 2)
    assert torch.equal(batch.support_x[1, 0], train.goal(6))
    assert torch.equal(Nav2DTasks(seed=0, split="train").batch(6, 1).support_x[0], batch.support_x[1])
    assert float(batch.support_x.abs().max()) <= 0.5
    assert not torch.equal(Nav2DTasks(seed=0, split="test").goal(5), train.goal(5))
    assert not torch.equal(Nav2DTasks(seed=1, split="train").goal(5), train.goal(5))
    assert int(batch.info["rollout_seed"][0]) == rollout_seed(0, "train", 5)
    seeds = {rollout_seed(s, split, i) for s in range(3) for split in ("train", "test") for i in range(50)}
    assert len(seeds) == 300


def test_goals_cover_the_square():
    goals = Nav2DTasks(seed=0, split="train").batch(0, 400).support_x[:, 0]
    assert goals.min() < -0.45 and goals.max() > 0.45
    assert abs(float(goals.mean())) < 0.05


def test_returns_to_go_discount_the_future():
    rewards = torch.randn(3, 5, 7)
    found = returns_to_go(rewards, 0.9)
    for t in range(7):
        weights = 0.9 ** torch.arange(7 - t, dtype=rewards.dtype)
        assert torch.allclose(found[..., t], (rewards[..., t:] * weights).sum(-1), atol=1e-5)


def test_linear_baseline_fits_each_task_on_its_own_features():
    torch.manual_seed(0)
    obs = torch.randn(3, 4, 6, 2, dtype=torch.float64)
    t = (torch.arange(6, dtype=torch.float64) / 100).expand(3, 4, 6)
    weights = torch.randn(3, 3)
    targets = weights[:, 0, None, None] * obs[..., 0] + weights[:, 1, None, None] * obs[..., 1] ** 2 \
        + weights[:, 2, None, None] * t + 1.5
    fit = linear_baseline(obs, targets, reg=1e-12)
    assert torch.allclose(fit, targets, atol=1e-6)
    alone = linear_baseline(obs[1], targets[1], reg=1e-12)
    assert torch.allclose(alone, fit[1], atol=1e-9)
    assert fit.dtype == torch.float64 and not fit.requires_grad


def test_linear_baseline_of_degenerate_trajectories_is_finite():
    obs = torch.zeros(2, 3, 5, 2)  # no movement at all: the state features are all zero, the Gram matrix singular
    targets = torch.randn(2, 3, 5)
    fit = linear_baseline(obs, targets, reg=0.0)
    assert torch.isfinite(fit).all() and fit.dtype == torch.float32


def test_an_episode_ends_at_the_goal():
    goals = torch.tensor([[0.25, 0.0], [0.5, 0.5]])
    found = nav2d_rollouts(lambda obs, t: torch.tensor([0.05, 0.0]).expand_as(obs), goals, 2, 8)
    # task 0 reaches (0.25, 0) after 5 steps: those 5 steps happened, then nothing (reward 0)
    assert found.mask[0, 0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert found.rewards[0, 0, 5:].abs().sum() == 0 and found.rewards[0, 0, 3] < 0
    assert found.mask[1].all()  # task 1 never gets there
    assert torch.allclose(found.returns, found.rewards.sum(-1))


def test_linear_baseline_ignores_steps_after_the_end():
    torch.manual_seed(1)
    obs, targets = torch.randn(4, 6, 2, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.float64)
    mask[:, 4:] = 0
    changed = targets.clone()
    changed[:, 4:] = 1e6
    fit = linear_baseline(obs, targets, mask)
    assert torch.allclose(fit, linear_baseline(obs, changed, mask))
