"""HalfCheetah direction and velocity tasks (Finn et al. 2017, §5.3), stepped in batches with MuJoCo.

The robot is gymnasium's HalfCheetah (``half_cheetah.xml``, MuJoCo timestep 0.01, 5 physics steps per action:
dt = 0.05); the observation is gymnasium's v5 one, ``qpos[1:]`` and ``qvel`` (17 numbers); actions are clipped to
[−1, 1] (6 joints). The reward of one step, as in the MAML paper's code (rllab's ``HalfCheetahEnvRandDirec`` and
``HalfCheetahEnvRandVel``), with ``v`` the forward velocity of the torso and ``a`` the clipped action::

    rl-cheetah-dir:  r = d · v − 0.05 ‖a‖²,      d ∈ {−1, +1} (run backward or forward), drawn per task
    rl-cheetah-vel:  r = −|v − v*| − 0.05 ‖a‖²,  v* ~ U[0, 2] drawn per task

Every trajectory starts at gymnasium's initial pose with no reset noise (the policy's own noise is seeded per
task, :func:`metaloop.tasks.rl.task_generators`), and runs the full horizon (200 steps in the presets).

Batching: all tasks × rollouts advance one action at a time in one call of MuJoCo's ``rollout`` module (its
threads step the batch in C), and the policy runs once per step on the whole batch, so sampling costs one
Python call per time step, not per environment. gymnasium and mujoco are the optional ``rl`` extra
(``pip install -e '.[rl]'``); without them the benchmarks say so in one line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from metaloop.errors import MetaloopError
from metaloop.tasks.rl import GoalTasks, Rollouts

FRAME_SKIP = 5
CONTROL_COST = 0.05  # 0.5 · 1e-1, as in the MAML paper's code
OBS_DIM, ACT_DIM = 17, 6
KINDS = ("dir", "vel")
MAX_VELOCITY = 2.0


@lru_cache(maxsize=1)
def mujoco_modules() -> tuple[Any, Any, Any]:
    """``(mujoco, mujoco.rollout, the HalfCheetah model)``, or a one-line error naming the extra to install."""
    try:
        import gymnasium
        import mujoco
        from mujoco import rollout
    except ImportError as exc:
        raise MetaloopError(f"the HalfCheetah benchmarks need gymnasium and mujoco ({exc.name} is missing): "
                            "pip install -e '.[rl]'") from None
    path = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", "half_cheetah.xml")
    return mujoco, rollout, mujoco.MjModel.from_xml_path(path)


class CheetahTasks(GoalTasks):
    """HalfCheetah goals as a task stream (``kind`` ``"dir"``: a direction ±1; ``"vel"``: a target velocity in
    [0, 2]), each a goal ``[1]`` of :class:`~metaloop.tasks.rl.GoalTasks`."""

    def __init__(self, kind: str, *, seed: int = 0, split: str = "train") -> None:
        if kind not in KINDS:
            raise MetaloopError(f"HalfCheetah task kind {kind!r} is not one of {', '.join(KINDS)}")
        super().__init__(seed=seed, split=split)
        self.kind = kind

    def goal(self, index: int) -> Tensor:
        u = float(torch.rand((), generator=self.generator(index), dtype=torch.float64))
        return torch.tensor([(1.0 if u < 0.5 else -1.0) if self.kind == "dir" else MAX_VELOCITY * u])


def forward_velocity(before: Any, after: Any, timestep: float) -> Any:
    """The torso's mean forward velocity over one action (``x`` is the first coordinate of ``qpos``, which
    follows the time in MuJoCo's full physics state)."""
    return (after[:, 1] - before[:, 1]) / (FRAME_SKIP * timestep)


def cheetah_rollouts(kind: str) -> Callable[[Callable[[Tensor, int], Tensor], Tensor, int, int], Rollouts]:
    """The :data:`~metaloop.tasks.rl.Environment` of ``rl-cheetah-<kind>``: ``count`` trajectories of ``horizon``
    steps for each goal of ``goals [T, 1]``."""

    @torch.no_grad()
    def environment(act: Callable[[Tensor, int], Tensor], goals: Tensor, count: int, horizon: int) -> Rollouts:
        mujoco, rollout, model = mujoco_modules()
        data = mujoco.MjData(model)
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        tasks = goals.shape[0]
        batch = tasks * count
        state = torch.zeros(batch, mujoco.mj_stateSize(model, spec), dtype=torch.float64).numpy()
        mujoco.mj_getState(model, data, state[0], spec)
        state[:] = state[0]
        threads = [mujoco.MjData(model) for _ in range(max(1, min(batch, os.cpu_count() or 1)))]
        goal = goals[:, 0].to(torch.float64).repeat_interleave(count)
        obs, actions, rewards = [], [], []
        with contextlib.ExitStack() as stack:
            # One thread pool for the whole horizon (mujoco ≥ 3.3), else the module's function (a pool per call).
            runner = (stack.enter_context(rollout.Rollout(nthread=len(threads))) if hasattr(rollout, "Rollout")
                      else rollout)
            for t in range(horizon):
                now = torch.from_numpy(state[:, 2:2 + OBS_DIM].copy()).view(tasks, count, OBS_DIM)
                a = act(now.to(goals.dtype), t)
                clipped = a.clamp(-1.0, 1.0).to(torch.float64).reshape(batch, 1, ACT_DIM)
                control = clipped.expand(batch, FRAME_SKIP, ACT_DIM).contiguous().numpy()
                after = runner.rollout(model, threads, state, control)[0][:, -1]
                v = torch.from_numpy(forward_velocity(state, after, model.opt.timestep))
                forward = goal * v if kind == "dir" else -(v - goal).abs()
                reward = forward - CONTROL_COST * clipped.square().sum((-2, -1))
                obs.append(now.to(goals.dtype))
                actions.append(a)
                rewards.append(reward.view(tasks, count).to(goals.dtype))
                state = after.copy()
        return Rollouts(torch.stack(obs, -2), torch.stack(actions, -2), torch.stack(rewards, -1),
                        torch.ones(tasks, count, horizon, dtype=goals.dtype))

    return environment


__all__ = ["CheetahTasks", "cheetah_rollouts", "forward_velocity", "mujoco_modules"]
