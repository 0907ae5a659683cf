"""HalfCheetah tasks (metaloop/tasks/cheetah.py): the batched MuJoCo stepping equals gymnasium's HalfCheetah-v5
step by step, the rewards are the paper's, the goals are seeded, and without the rl extra one line says what to
install."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from metaloop.errors import MetaloopError
from metaloop.tasks import cheetah
from metaloop.tasks.cheetah import CONTROL_COST, CheetahTasks, cheetah_rollouts


def test_batched_stepping_equals_gymnasium():
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    g = torch.Generator().manual_seed(0)
    actions = torch.rand(2, 3, 25, 6, generator=g, dtype=torch.float64) * 2.4 - 1.2  # some beyond ±1: clipped
    goals = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    found = cheetah_rollouts("dir")(lambda obs, t: actions[:, :, t], goals, 3, 25)
    assert found.obs.shape == (2, 3, 25, 17) and found.rewards.shape == (2, 3, 25) and found.mask.all()
    speed = cheetah_rollouts("vel")(lambda obs, t: actions[:, :, t], torch.tensor([[0.5], [1.5]]).double(), 3, 25)
    env = gym.make("HalfCheetah-v5", reset_noise_scale=0.0)
    for task, direction in ((0, 1.0), (1, -1.0)):
        for r in range(3):
            obs, _ = env.reset(seed=0)
            for t in range(25):
                np.testing.assert_allclose(found.obs[task, r, t].numpy(), obs, atol=1e-10)
                a = actions[task, r, t].numpy()
                obs, _, _, _, info = env.step(a)
                cost = CONTROL_COST * float((np.clip(a, -1, 1) ** 2).sum())
                assert found.rewards[task, r, t].item() == pytest.approx(direction * info["x_velocity"] - cost,
                                                                         abs=1e-9)
                target = 0.5 if task == 0 else 1.5
                assert speed.rewards[task, r, t].item() == pytest.approx(-abs(info["x_velocity"] - target) - cost,
                                                                         abs=1e-9)


def test_goals_are_seeded_and_in_range():
    directions = CheetahTasks("dir", seed=0).batch(0, 50).info["goal"][:, 0]
    assert set(directions.tolist()) == {-1.0, 1.0}
    assert torch.equal(directions[10:20], CheetahTasks("dir", seed=0).batch(10, 10).info["goal"][:, 0])
    speeds = CheetahTasks("vel", seed=1, split="test").batch(0, 50).info["goal"][:, 0]
    assert 0 <= speeds.min() and speeds.max() <= 2 and speeds.std() > 0.3
    with pytest.raises(MetaloopError, match="not one of dir, vel"):
        CheetahTasks("spin")


def test_without_the_rl_extra_one_line_says_what_to_install(monkeypatch):
    cheetah.mujoco_modules.cache_clear()
    monkeypatch.setitem(sys.modules, "mujoco", None)  # import mujoco now raises ImportError
    try:
        with pytest.raises(MetaloopError, match=r"need gymnasium and mujoco .*pip install -e '\.\[rl\]'"):
            cheetah.mujoco_modules()
    finally:
        monkeypatch.undo()
        cheetah.mujoco_modules.cache_clear()
