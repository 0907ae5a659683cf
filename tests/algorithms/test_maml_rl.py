"""MAML-RL: the vectorized meta-gradient against a task-by-task autograd reference, the estimators' semantics,
the seeding that makes a task's samples its own, a short meta-training that raises the adapted return, and the
trpo outer step (its Fisher products against an explicit Hessian through the inner step, the bound, training)."""

from __future__ import annotations

import pytest
import torch

from metaloop.algorithms.anil_rl import ANILRL
from metaloop.algorithms.maml_rl import FOMAMLRL, MAMLRL
from metaloop.algorithms.pretrain_rl import PretrainRL
from metaloop.core.dice import dice_objective, magic_box
from metaloop.core.trpo import gaussian_kl
from metaloop.errors import MetaloopError
from metaloop.models.policy import GaussianMLP, log_prob, mean_action
from metaloop.tasks.rl import (
    Nav2DTasks, linear_baseline, nav2d_rollouts, returns_to_go, standardized_advantages, task_generators,
)

SMALL = {"rollouts": 6, "horizon": 12, "discount": 0.95}


def learner(cls=MAMLRL, *, seed: int = 0, hidden=(16, 16), environment=nav2d_rollouts, **kwargs) -> MAMLRL:
    torch.manual_seed(seed)
    return cls(GaussianMLP(2, 2, hidden), environment=environment, **{**SMALL, **kwargs})


def ending_early(act, goals, count, horizon):
    """nav2d whose trajectory r ends after 3 + 2r steps (so that the masks of ended episodes are exercised)."""
    found = nav2d_rollouts(act, goals, count, horizon)
    ends = 3 + 2 * torch.arange(count)
    found.mask = found.mask * (torch.arange(horizon)[None, :] < ends[:, None]).to(found.mask.dtype)
    found.rewards = found.rewards * found.mask
    return found


def recorded(model: MAMLRL) -> list:
    """Wrap ``model.sample`` to keep every batch of rollouts it returns."""
    batches, inner = [], model.sample

    def sample(*args):
        batches.append(inner(*args))
        return batches[-1]

    model.sample = sample
    return batches


def reference_gradient(model: MAMLRL, rollouts: list, tasks: int, *, exact: bool, first_order: bool) -> dict:
    """Task by task with plain autograd, on the rollouts the vectorized run sampled: θ' = θ + α ∇θ S(θ; pre),
    then ∇θ of the DiCE objective of the post-adaptation rollouts (times the magic box of the pre-adaptation
    log-probabilities for the exact estimator), averaged over tasks."""
    pre, post = rollouts
    theta = dict(model.model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in theta.items()}
    for i in range(tasks):
        obs, actions, rewards, mask = pre.obs[i], pre.actions[i], pre.rewards[i], pre.mask[i]
        targets = returns_to_go(rewards, model.discount)
        adv = (targets - linear_baseline(obs, targets, mask))[mask.bool()]
        adv = torch.zeros_like(targets).masked_scatter(mask.bool(), (adv - adv.mean()) / (adv.std() + 1e-8))
        inner = (log_prob(model.model, theta, obs, actions) * adv)[mask.bool()].mean()
        grads = torch.autograd.grad(inner, list(theta.values()), create_graph=not first_order)
        adapted = {n: p + model.inner_lr * g for (n, p), g in zip(theta.items(), grads)}
        targets = returns_to_go(post.rewards[i], model.discount)
        objective = dice_objective(log_prob(model.model, adapted, post.obs[i], post.actions[i]), post.rewards[i],
                                   discount=model.discount, mask=post.mask[i],
                                   baseline=linear_baseline(post.obs[i], targets, post.mask[i]))
        if exact:
            objective = magic_box(log_prob(model.model, theta, obs, actions)[mask.bool()].sum()) * objective
        for n, g in zip(theta, torch.autograd.grad(objective / tasks, list(theta.values()))):
            total[n] += g
    return total


@pytest.mark.parametrize("cls, estimator, environment", [
    (MAMLRL, "maml", nav2d_rollouts), (MAMLRL, "exact", nav2d_rollouts), (FOMAMLRL, "maml", nav2d_rollouts),
    (MAMLRL, "exact", ending_early)], ids=["maml", "exact", "fomaml", "exact-episodes-end"])
def test_vectorized_meta_gradient_equals_the_task_by_task_reference(cls, estimator, environment):
    model = learner(cls, estimator=estimator, environment=environment).double()
    batch = Nav2DTasks(seed=3).batch(0, 3).to("cpu", torch.float64)
    batches = recorded(model)
    model.zero_grad()
    loss = model.meta_gradient(batch)
    assert environment is nav2d_rollouts or not batches[0].mask.all()
    assert loss == pytest.approx(-float(batches[1].returns.mean()))
    expected = reference_gradient(model, batches, 3, exact=estimator == "exact", first_order=cls is FOMAMLRL)
    for name, p in model.model.named_parameters():
        assert torch.allclose(-p.grad, expected[name], atol=1e-10, rtol=1e-8), name


def test_the_estimators_and_the_first_order_variant_differ():
    batch = Nav2DTasks(seed=3).batch(0, 3)
    grads = []
    for cls, estimator in [(MAMLRL, "maml"), (MAMLRL, "exact"), (FOMAMLRL, "maml")]:
        model = learner(cls, estimator=estimator)
        model.meta_gradient(batch)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert not torch.allclose(grads[0], grads[1]) and not torch.allclose(grads[0], grads[2])


def test_a_tasks_samples_do_not_depend_on_its_batch():
    """The meta-gradient of 4 tasks is the mean of those of its halves (as --nproc 2 computes it), and a task
    evaluates the same alone or among others: each task's noise comes from its own seed."""
    batch = Nav2DTasks(seed=1).batch(10, 4)
    whole = learner()
    whole.meta_gradient(batch)
    halves = learner()
    for part in (batch.slice(0, 2), batch.slice(2, 4)):
        halves.meta_gradient(part)
    for a, b in zip(whole.parameters(), halves.parameters()):
        assert torch.allclose(a.grad, b.grad / 2, atol=1e-6)
    together = whole.evaluate_batch(batch, [0, 1, 2])
    alone = whole.evaluate_batch(batch.slice(2, 3), [0, 1, 2])
    assert together.shape == (4, 3) and torch.allclose(together[2], alone[0], atol=1e-5)
    assert torch.equal(whole.evaluate_batch(batch, [0, 1, 2]), together)


def test_evaluation_steps_are_any_subset_in_any_order():
    model = learner()
    batch = Nav2DTasks(seed=0, split="test").batch(0, 2)
    full = model.evaluate_batch(batch, [0, 1, 2, 3])
    assert torch.allclose(model.evaluate_batch(batch, [3, 1]), full[:, [3, 1]])


def test_test_inner_lr_sets_the_evaluation_step():
    batch = Nav2DTasks(seed=0, split="test").batch(0, 2)
    base = learner().evaluate_batch(batch, [0, 1])
    other = learner(test_inner_lr=0.5).evaluate_batch(batch, [0, 1])
    assert torch.equal(base[:, 0], other[:, 0]) and not torch.allclose(base[:, 1], other[:, 1])


def test_meta_training_raises_the_adapted_return():
    torch.manual_seed(0)
    model = learner(hidden=(32, 32), rollouts=10, horizon=20)
    optimizer = model.make_optimizer(1e-2)
    tasks, test = Nav2DTasks(seed=0), Nav2DTasks(seed=0, split="test").batch(0, 10)
    before = model.evaluate_batch(test, [1]).mean()
    for it in range(40):
        model.meta_step(tasks.batch(it * 10, 10), optimizer)
    after = model.evaluate_batch(test, [1]).mean()
    assert after > before + 1.0, (before, after)


def test_bad_settings_are_refused():
    with pytest.raises(MetaloopError, match="estimator"):
        learner(estimator="dice")
    with pytest.raises(MetaloopError, match="rollouts"):
        learner(rollouts=0)
    with pytest.raises(MetaloopError, match="log_std"):
        MAMLRL(torch.nn.Linear(2, 2), environment=nav2d_rollouts)
    assert task_generators(Nav2DTasks().batch(0, 2))[0].initial_seed() != task_generators(
        Nav2DTasks().batch(1, 1))[0].initial_seed()


def test_the_pretrained_baseline_follows_the_policy_gradient_without_an_inner_step():
    """Its meta-gradient is the DiCE policy gradient of the mean return of θ's own rollouts."""
    model = learner(PretrainRL).double()
    batch = Nav2DTasks(seed=2).batch(0, 2).to("cpu", torch.float64)
    batches = recorded(model)
    model.meta_gradient(batch)
    assert len(batches) == 1
    (found,) = batches
    theta = dict(model.model.named_parameters())
    total = 0
    for i in range(2):
        targets = returns_to_go(found.rewards[i], model.discount)
        total = total + dice_objective(log_prob(model.model, theta, found.obs[i], found.actions[i]), found.rewards[i],
                                       discount=model.discount, mask=found.mask[i],
                                       baseline=linear_baseline(found.obs[i], targets, found.mask[i])) / 2
    for (name, p), g in zip(theta.items(), torch.autograd.grad(total, list(theta.values()))):
        assert torch.allclose(-p.grad, g, atol=1e-10), name


# ---------------------------------------------------------------------------------------------- the trpo outer step
def test_trpo_fisher_vector_products_are_the_hessian_of_the_kl_through_the_inner_step():
    """The KL(old ‖ new) of the adapted policies as a function of θ, differentiated twice through the inner step:
    its Hessian at θ_old by double backward (what trpo_step's Fisher products compute) equals the Hessian that
    torch.autograd.functional.hessian computes from a task-by-task autograd reference."""
    model = learner(hidden=(3,), rollouts=3, horizon=4).double()
    batch = Nav2DTasks(seed=5).batch(0, 2).to("cpu", torch.float64)
    tasks, gens = batch.support_x[:, 0], task_generators(batch)
    pre = [model.sample(model.per_task(2), tasks, gens)]
    phi = model.adapted(pre, create_graph=True)
    post = model.sample(phi, tasks, gens)
    with torch.no_grad():
        old = model.log_probs(phi, post), model.mean_actions(phi, post.obs)
    adv = standardized_advantages(post, model.discount)
    params = list(model.parameters())
    _, kl = model.trust_region_terms(phi, post, adv, old)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, params, create_graph=True)])
    n = grad.numel()
    columns = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(grad[i], params, retain_graph=True)])
               for i in range(n)]
    fisher = torch.stack(columns)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in params]
    start = torch.nn.utils.parameters_to_vector(params).detach()

    def kl_of(vector):
        chunks = torch.split(vector, [s.numel() for s in shapes])
        theta = {name.removeprefix("model."): c.view(s) for name, c, s in zip(names, chunks, shapes)}
        total = 0
        for i in range(2):
            o, a, m = pre[0].obs[i], pre[0].actions[i], pre[0].mask[i]
            targets = returns_to_go(pre[0].rewards[i], model.discount)
            adv_i = (targets - linear_baseline(o, targets, m))[m.bool()]
            adv_i = torch.zeros_like(targets).masked_scatter(m.bool(), (adv_i - adv_i.mean()) / (adv_i.std() + 1e-8))
            inner = (log_prob(model.model, theta, o, a) * adv_i)[m.bool()].mean()
            grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
            adapted = {k: v + model.inner_lr * g for (k, v), g in zip(theta.items(), grads)}
            mean = mean_action(model.model, adapted, post.obs[i])
            kl_i = gaussian_kl(old[1][i], phi["log_std"][i].detach(), mean, adapted["log_std"])
            total = total + (kl_i * post.mask[i]).sum() / post.mask[i].sum() / 2
        return total

    reference = torch.autograd.functional.hessian(kl_of, start)
    torch.testing.assert_close(fisher, reference, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(("fisher", "part"), [("exact", None), ("adapted", None), ("adapted", 2)])
def test_a_trpo_step_improves_the_surrogate_within_the_kl_bound(fisher, part):
    model = learner(outer_step="trpo", max_kl=0.005, trpo_fisher=fisher, fisher_rollouts=part).double()
    batch = Nav2DTasks(seed=7).batch(0, 4).to("cpu", torch.float64)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    batches = recorded(model)
    model.meta_step(batch, model.make_optimizer(1e-2))
    pre, post = batches[0], batches[1]
    after = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    assert not torch.equal(before, after)  # a step was taken
    adv = standardized_advantages(post, model.discount)
    torch.nn.utils.vector_to_parameters(before, model.parameters())
    with torch.no_grad():
        phi_old = model.adapted([pre], create_graph=False)
        old = model.log_probs(phi_old, post), model.mean_actions(phi_old, post.obs)
        s_old, _ = model.trust_region_terms(phi_old, post, adv, old)
    torch.nn.utils.vector_to_parameters(after, model.parameters())
    with torch.no_grad():
        s_new, kl = model.trust_region_terms(model.adapted([pre], create_graph=False), post, adv, old)
    assert float(s_new) > float(s_old) and 0 < float(kl) <= 0.005


def test_trpo_meta_training_raises_the_adapted_return():
    torch.manual_seed(0)
    model = learner(hidden=(32, 32), rollouts=10, horizon=20, outer_step="trpo", max_kl=0.01)
    tasks, test = Nav2DTasks(seed=0), Nav2DTasks(seed=0, split="test").batch(0, 10)
    before = model.evaluate_batch(test, [1]).mean()
    for it in range(25):
        model.meta_step(tasks.batch(it * 10, 10), None)
    after = model.evaluate_batch(test, [1]).mean()
    assert after > before + 1.0, (before, after)


def test_trpo_settings_that_cannot_work_are_refused():
    with pytest.raises(MetaloopError, match="option 'outer_step'"):
        learner(outer_step="sgd")
    with pytest.raises(MetaloopError, match="option 'estimator': the trpo outer step"):
        learner(outer_step="trpo", estimator="exact")
    with pytest.raises(MetaloopError, match="option 'max_kl'"):
        learner(outer_step="trpo", max_kl=0)
    assert learner(outer_step="trpo").single_process_only == "option 'outer_step': trpo"
    assert learner().single_process_only is None


def test_anil_adapts_only_the_policys_last_layer():
    model = learner(ANILRL).double()
    assert model.adapted_names == ["net.4.weight", "net.4.bias"]
    batch = Nav2DTasks(seed=4).batch(0, 2).to("cpu", torch.float64)
    tasks, gens = batch.support_x[:, 0], task_generators(batch)
    phi = model.per_task(2)
    adapted = model.step(phi, model.sample(phi, tasks, gens), create_graph=False)
    changed = {n for n in phi if not torch.equal(adapted[n], phi[n])}
    assert changed == {"net.4.weight", "net.4.bias"}
    same = learner(MAMLRL, adapt="head").double()
    model.meta_gradient(batch)
    same.meta_gradient(batch)
    for a, b in zip(model.parameters(), same.parameters()):
        assert torch.equal(a.grad, b.grad)
    assert any(p.grad.abs().sum() > 0 for n, p in model.model.named_parameters() if n.startswith("net.0"))


def test_the_adapted_fisher_is_the_mean_of_each_adapted_policys_own():
    """trpo_fisher="adapted": the Hessian in θ of the mean KL with ∂θ'/∂θ = I, i.e. the mean over tasks of the
    Hessian of KL(old ‖ π_ψ) in ψ at ψ = θ'_i (explicit, task by task)."""
    model = learner(hidden=(3,), rollouts=3, horizon=4, outer_step="trpo", trpo_fisher="adapted").double()
    batch = Nav2DTasks(seed=6).batch(0, 2).to("cpu", torch.float64)
    tasks, gens = batch.support_x[:, 0], task_generators(batch)
    pre = [model.sample(model.per_task(2), tasks, gens)]
    phi = model.adapted(pre, create_graph=True)
    post = model.sample(phi, tasks, gens)
    with torch.no_grad():
        old = model.log_probs(phi, post), model.mean_actions(phi, post.obs)
    adv = standardized_advantages(post, model.discount)
    own = model.params()
    shifted = {n: v.detach() + (own[n] - own[n].detach()) for n, v in phi.items()}
    kl = model.trust_region_terms(shifted, post, adv, old)[1]
    params = list(model.parameters())
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, params, create_graph=True)])
    fisher = torch.stack([torch.cat([h.reshape(-1) for h in torch.autograd.grad(grad[i], params, retain_graph=True)])
                          for i in range(grad.numel())])
    names, shapes = [n.removeprefix("model.") for n, _ in model.named_parameters()], [p.shape for p in params]
    reference = 0
    for i in range(2):
        def kl_i(vector, i=i):
            chunks = torch.split(vector, [s.numel() for s in shapes])
            psi = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
            value = gaussian_kl(old[1][i], phi["log_std"][i].detach(), mean_action(model.model, psi, post.obs[i]),
                                psi["log_std"])
            return (value * post.mask[i]).sum() / post.mask[i].sum() / 2

        at = torch.cat([phi[n][i].detach().reshape(-1) for n in names])
        reference = reference + torch.autograd.functional.hessian(kl_i, at)
    torch.testing.assert_close(fisher, reference, rtol=1e-8, atol=1e-10)
    with pytest.raises(MetaloopError, match="option 'trpo_fisher'"):
        learner(outer_step="trpo", trpo_fisher="diagonal")
    with pytest.raises(MetaloopError, match=r"option 'fisher_rollouts': must be between 1 and rollouts \(6\)"):
        learner(outer_step="trpo", fisher_rollouts=7)
