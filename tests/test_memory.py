"""Memory that stays flat over a long run: glibc's malloc keeps what variable-sized batches free unless told not to
(issue 18). The growth over 2,000 real training steps is measured by benchmarks/memory_growth.py, not here."""

import subprocess
import sys

import pytest
from conftest import REPO_ROOT, last_json, run_fresh_python

from distilxlsr_pt.memory import glibc, resident_memory_gb

# Blocks of ~4 MB, each of another size, each followed by a small block that stays: once freed, the big blocks are
# holes in glibc's heap (its mmap threshold adapted upwards after the first 16 MB block), never returned.
FRAGMENTING_PATTERN = """
    import json, sys
    import torch
    from distilxlsr_pt.memory import keep_memory_flat, resident_memory_gb

    changed = keep_memory_flat(batch_shapes_repeat=False) if sys.argv[1] == "flat" else False
    torch.ones(4 * 2**20)
    before = resident_memory_gb()["rss_gb"]
    big, small = [], []
    for i in range(40):
        big.append(torch.ones(2**20 + i * 1000))
        small.append(torch.ones(8000))
    del big
    print(json.dumps({"changed": changed, "kept_mb": (resident_memory_gb()["rss_gb"] - before) * 1000}))
"""


@pytest.mark.skipif(glibc() is None, reason="glibc's malloc only")
def test_freed_batches_go_back_to_the_system_with_keep_memory_flat():
    default = last_json(run_fresh_python(FRAGMENTING_PATTERN, "default", cwd=REPO_ROOT, project_on_path=True))
    flat = last_json(run_fresh_python(FRAGMENTING_PATTERN, "flat", cwd=REPO_ROOT, project_on_path=True))
    assert default["kept_mb"] > 100  # the 160 MB freed stay resident under glibc's defaults ...
    assert flat["changed"] and flat["kept_mb"] < 20  # ... and go back to the system with keep_memory_flat


@pytest.mark.skipif(glibc() is None, reason="glibc's malloc only")
def test_keep_memory_flat_can_be_turned_off():
    result = run_fresh_python(
        FRAGMENTING_PATTERN, "flat", cwd=REPO_ROOT, project_on_path=True, env={"DISTILXLSR_KEEP_MEMORY_FLAT": "0"}
    )
    assert last_json(result)["changed"] is False and last_json(result)["kept_mb"] > 100


@pytest.mark.skipif(glibc() is None, reason="glibc's malloc only")
def test_padded_batches_keep_glibcs_own_settings_unless_told_otherwise():
    # Batches padded to a multiple of 0.5 s repeat their shapes, and glibc's defaults then stay flat at full speed
    # (benchmarks/memory_growth.py measures it over real runs): the fixed threshold is set only when asked for.
    code = """
        import json
        from distilxlsr_pt.memory import keep_memory_flat
        print(json.dumps({"changed": keep_memory_flat(batch_shapes_repeat=True)}))
    """
    assert last_json(run_fresh_python(code, cwd=REPO_ROOT, project_on_path=True))["changed"] is False
    forced = run_fresh_python(code, cwd=REPO_ROOT, project_on_path=True, env={"DISTILXLSR_KEEP_MEMORY_FLAT": "1"})
    assert last_json(forced)["changed"] is True


def test_resident_memory_counts_worker_processes():
    alone = resident_memory_gb()
    worker = subprocess.Popen([sys.executable, "-c", "import time; x = b'x' * (200 * 2**20); time.sleep(30)"])
    try:
        for _ in range(100):  # until the child has touched its 200 MB
            with_worker = resident_memory_gb()
            if with_worker["workers_rss_gb"] > 0.2:
                break
            subprocess.run(["sleep", "0.1"])
    finally:
        worker.kill()
    assert alone["rss_gb"] > 0.05 and with_worker["workers_rss_gb"] > 0.2
