"""The short fault campaign (bench/fault_campaign.py): three replicating nodes over the WAN
emulator under continuous increments and key writes, faults of every kind (kill -9, SIGSTOP,
partition, full disk) at random moments; nothing acknowledged is lost and the regions end
equal."""
import os
import random
import sys

from conftest import BIN, SLOW

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import fault_campaign  # noqa: E402


def test_a_short_fault_campaign_loses_no_acknowledged_write(tmpdir_path):
    assert os.geteuid() == 0, "the disk fault mounts a tmpfs: run the tests as root (CI does)"
    seed = random.randrange(1 << 32)
    lines = []
    tally = fault_campaign.run_campaign(rounds=8, seed=seed, work=tmpdir_path, binary=BIN,
                                        slow=SLOW, log=lines.append)
    context = f"seed {seed}: {tally}\n" + "\n".join(lines)
    # Two blocks of the four kinds: each fault happened twice.
    assert tally["faults"] == {"kill": 2, "stop": 2, "partition": 2, "disk": 2}, context
    # The writers got through: faults cost availability, not the campaign.
    assert tally["increments_acknowledged"] > 50 and tally["keys_acknowledged"] > 20, context
    assert tally["refused"] == 0, context
    assert tally["lost"] == 0, context
    assert tally["phantom_increments"] == 0, context
    assert tally["regions_equal"], context
