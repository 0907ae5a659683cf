"""Reinforcement-learning tasks: each task is an environment (a goal), and a meta-learner's data are rollouts.

``rl-nav2d`` (Finn et al. 2017, §5.3): a point in the plane starts at the origin; the action is a velocity, clipped
to [−0.1, 0.1] per coordinate; the reward is the negative distance to the task's goal after the step; an episode
ends when both coordinates are within 0.01 of the goal (as in the paper's code), or after 100 steps.
Goals are drawn uniformly from [−0.5, 0.5]², task ``i`` of a split from its own generator seeded by
``(seed, split, i)``; the task also carries the seed of its rollouts' noise (:func:`rollout_seed`), so that the
samples of a task do not depend on which process draws them, or on how many came before (resume, ``--nproc``).
The environment is batched arithmetic: every rollout of every task steps in one tensor op.

:func:`nav2d_rollouts` samples trajectories of a policy (no gradient) and returns them with their rewards;
:func:`linear_baseline` is Duan et al. 2016's feature baseline, fitted per task by ridge regression on the
returns to go; :func:`returns_to_go` discounts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metaloop.tasks.base import TaskBatch, TaskStream, task_seed

GOAL_RANGE = 0.5
MAX_SPEED = 0.1
GOAL_TOLERANCE = 0.01


def rollout_seed(seed: int, split: str, index: int) -> int:
    """The seed of task ``index``'s rollout noise: distinct from the seed of its goal."""
    return (task_seed(seed, split, index) * 0x2545F4914F6CDD1D + 1) % (2**63 - 1)


class GoalTasks(TaskStream):
    """Goals of an RL task family as a task stream: ``batch(start, count)`` holds each task's goal ``[tasks, 1, d]``
    as its support and query inputs (an RL learner samples its own rollouts), and ``info["goal"]`` ``[tasks, d]``
    and ``info["rollout_seed"]`` (int64). A subclass draws :meth:`goal` ``(index) -> [d]``."""

    def goal(self, index: int) -> Tensor:
        raise NotImplementedError

    def batch(self, start: int, count: int) -> TaskBatch:
        goals = torch.stack([self.goal(i) for i in range(start, start + count)])
        seeds = torch.tensor([rollout_seed(self.seed, self.split, i) for i in range(start, start + count)])
        x, y = goals[:, None, :], torch.zeros(count, 1)
        return TaskBatch(x, y, x, y, info={"goal": goals, "rollout_seed": seeds})


class Nav2DTasks(GoalTasks):
    """The goals of 2D navigation, uniform in ``[−GOAL_RANGE, GOAL_RANGE]²``."""

    def goal(self, index: int) -> Tensor:
        g = self.generator(index)
        return (torch.rand(2, generator=g, dtype=torch.float64) * 2 - 1).float() * GOAL_RANGE


#: ``environment(act, tasks, count, horizon)``: ``count`` trajectories of ``horizon`` steps on each of the tasks
#: whose descriptions (their support inputs: nav2d's goals) are ``tasks [T, d]``, of the policy
#: ``act(obs [T, count, obs_dim], t) -> actions [T, count, act_dim]``.
Environment = Callable[[Callable[[Tensor, int], Tensor], Tensor, int, int], "Rollouts"]


@dataclass
class Rollouts:
    """``obs [..., R, H, obs_dim]``, ``actions [..., R, H, act_dim]``, ``rewards [..., R, H]``: R trajectories of
    H steps (of each task, on the leading dimensions); ``mask [..., R, H]`` is 1 for the steps that happened, 0 after
    the episode ended (whose rewards are 0)."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor

    @property
    def returns(self) -> Tensor:
        """The undiscounted return of each trajectory ``[..., R]``."""
        return self.rewards.sum(-1)


@torch.no_grad()
def nav2d_rollouts(act: Callable[[Tensor, int], Tensor], goals: Tensor, count: int, horizon: int) -> Rollouts:
    """``count`` trajectories to each of ``goals [T, 2]``: every task and trajectory steps in one tensor op."""
    pos = torch.zeros(goals.shape[0], count, 2, dtype=goals.dtype, device=goals.device)
    alive = torch.ones(goals.shape[0], count, dtype=goals.dtype, device=goals.device)
    obs, actions, rewards, mask = [], [], [], []
    for t in range(horizon):
        a = act(pos, t)
        obs.append(pos)
        actions.append(a)
        mask.append(alive)
        pos = pos + a.clamp(-MAX_SPEED, MAX_SPEED)
        offset = pos - goals[:, None, :]
        rewards.append(-offset.norm(dim=-1) * alive)
        alive = alive * (offset.abs() >= GOAL_TOLERANCE).any(-1).to(alive.dtype)
    return Rollouts(torch.stack(obs, -2), torch.stack(actions, -2), torch.stack(rewards, -1), torch.stack(mask, -1))


def returns_to_go(rewards: Tensor, discount: float) -> Tensor:
    """``Σ_{t' ≥ t} γ^{t'−t} r_t'`` for ``rewards [..., H]``."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + discount * running
        out[..., t] = running
    return out


def linear_baseline(obs: Tensor, targets: Tensor, mask: Tensor | None = None, reg: float = 1e-5) -> Tensor:
    """Duan et al. 2016's baseline: a ridge regression of the returns to go ``targets [..., R, H]`` on the features
    ``[s, s², t, t², t³, 1]`` (``t`` the step over 100) of each task's own trajectories ``obs [..., R, H, d]`` (one
    fit per task on the leading dimensions; only the steps where ``mask`` is 1); its fit ``[..., R, H]``, without
    gradient. Solved in float64; a task whose system is singular retries with a penalty ten times larger (as rllab
    does), up to 1e4 times."""
    dtype = targets.dtype
    obs, targets = obs.detach().double(), targets.detach().double()
    lead, (rollouts, horizon, dim) = obs.shape[:-3], obs.shape[-3:]
    t = (torch.arange(horizon, dtype=obs.dtype, device=obs.device) / 100).expand(*lead, rollouts, horizon)[..., None]
    feats = torch.cat([obs, obs**2, t, t**2, t**3, torch.ones_like(t)], -1).reshape(*lead, -1, 2 * dim + 4)
    y = targets.reshape(*lead, -1, 1)
    weight = torch.ones_like(y) if mask is None else mask.detach().double().reshape(*lead, -1, 1)
    gram, moment = feats.transpose(-1, -2) @ (feats * weight), feats.transpose(-1, -2) @ (y * weight)
    eye = torch.eye(feats.shape[-1], dtype=feats.dtype, device=feats.device)
    weights = torch.zeros_like(moment)
    todo = torch.ones(lead, dtype=torch.bool, device=obs.device)
    for _ in range(5):
        found, info = torch.linalg.solve_ex(gram + reg * eye, moment)
        ok = todo & (info == 0) & torch.isfinite(found).flatten(-2).all(-1)
        weights = torch.where(ok[..., None, None], found, weights)
        todo = todo & ~ok
        if not bool(todo.any()):
            break
        reg *= 10
    return (feats @ weights).reshape(targets.shape).to(dtype)


def standardized_advantages(batch: Rollouts, discount: float) -> Tensor:
    """Returns to go less the linear baseline, standardized over each task's steps (those that happened; 0 after
    an episode's end): ``[T, R, H]``, the advantages of rllab's VPG (``center_adv``) that MAML-RL's inner step
    takes."""
    targets = returns_to_go(batch.rewards, discount)
    adv = targets - linear_baseline(batch.obs, targets, batch.mask)
    mask = batch.mask.flatten(1)
    count = mask.sum(1).clamp(min=1)
    mean = (adv.flatten(1) * mask).sum(1) / count
    std = ((((adv.flatten(1) - mean[:, None]) * mask) ** 2).sum(1) / (count - 1).clamp(min=1)).sqrt()
    return (adv - mean[:, None, None]) / (std[:, None, None] + 1e-8) * batch.mask


def task_generators(batch: TaskBatch) -> list[torch.Generator]:
    """Each task's own generator of rollout noise, seeded by the task (``info["rollout_seed"]``)."""
    return [torch.Generator().manual_seed(int(seed)) for seed in batch.info["rollout_seed"]]
