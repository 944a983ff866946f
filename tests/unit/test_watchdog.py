"""The watchdog device handling, against a file standing in for /dev/watchdog (no driver here): keepalives are
written while leading, the magic 'V' on disable, and a 'required' watchdog that cannot guard forbids leading."""

from pgha.agent.watchdog import Watchdog


def test_keepalives_then_magic_close(tmp_path):
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    wd = Watchdog("automatic", str(device), safety_margin=5)
    wd.keepalive(ttl=30, loop_wait=10)
    wd.keepalive(ttl=30, loop_wait=10)
    assert wd.timeout == 25
    wd.disable()
    assert device.read_bytes() == b"11V"
    wd.disable()  # idempotent
    assert device.read_bytes() == b"11V"


def test_unusable_timeout_is_skipped_in_automatic_mode(tmp_path):
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    wd = Watchdog("automatic", str(device), safety_margin=5)
    wd.keepalive(ttl=4, loop_wait=1)  # 4 - 5 s: nothing to arm
    assert device.read_bytes() == b"" and wd.may_lead(4, 1)


def test_required_but_missing_forbids_leading(tmp_path):
    wd = Watchdog("required", str(tmp_path / "absent"), safety_margin=-1)
    assert not wd.may_lead(30, 10)
    assert Watchdog("required", "/dev/null", safety_margin=-1).may_lead(30, 10)  # 30 - 15 >= 11
    assert Watchdog("off", "/dev/null").may_lead(30, 10) and not Watchdog("off", "/dev/null").usable(30, 10)
