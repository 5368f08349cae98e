import json
import os
import socket
import subprocess
import sys

from facesfm.training.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_gloo_processes_keep_weights_in_sync(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYOPENGL_PLATFORM": "osmesa",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "facesfm.cli",
        "train",
        "landmarks",
        str(tiny_data),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--max-steps",
        "3",
        "--quiet",
    ]
    p = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == 3
    # the largest difference of any weight between the two processes after 3 steps
    assert summary["ddp_param_spread"] == 0.0
    # and training did move the weights away from their (seeded) initialisation
    from facesfm.training.config import preset_config
    from facesfm.training.landmarks import build_landmark_net
    from facesfm.training.loop import seed_everything

    seed_everything(0)
    init = build_landmark_net(preset_config("tiny")).state_dict()
    trained = load_checkpoint(out / "checkpoints" / "last.pt")["models"]["model"]
    moved = max(
        float((trained[k].double() - init[k].double()).abs().max())
        for k in init
        if init[k].is_floating_point()
    )
    assert moved > 1e-4
    assert summary["epochs_done"] == 0
