"""bench/_latency.py and bench/_peer.py: the peer protocol and the interleaved timing order."""

import sys
from pathlib import Path

import pytest

from bench._latency import Peer, interleaved

ROOT = Path(__file__).resolve().parents[2]


def write_peer(tmp_path, body):
    script = tmp_path / "peer.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'bench')!r})\nfrom _peer import serve\n{body}\n")
    return script


def test_peer_answers_describe_and_timed_runs(tmp_path):
    script = write_peer(tmp_path, "print('a library talking on stdout')\n"
                                  "calls = []\n"
                                  "serve({'parameters': 7}, lambda: calls.append(print('inside a call')))")
    peer = Peer(sys.executable, script, [], cwd=ROOT)
    try:
        assert peer.describe == {"parameters": 7}
        times = peer.run(3)
        assert len(times) == 3 and all(t >= 0 for t in times)
        assert len(peer.run(1)) == 1  # prints inside calls went to stderr, not into the protocol
    finally:
        peer.close()
    assert peer.process.returncode == 0


def test_peer_that_dies_reports_its_stderr(tmp_path):
    script = write_peer(tmp_path, "raise SystemExit('no model for you')")
    with pytest.raises(RuntimeError, match="no model for you"):
        Peer(sys.executable, script, [], cwd=ROOT)


def test_interleaved_warms_up_then_takes_turns():
    order = []

    def side(name):
        def timed(count):
            order.extend([name] * count)
            return [float(len(order))] * count
        return timed

    result = interleaved({"zoo": side("zoo"), "peer": side("peer")}, warmup=2, rounds=3)
    assert order == ["zoo", "zoo", "peer", "peer"] + ["zoo", "peer"] * 3
    assert result["zoo"]["runs"] == result["peer"]["runs"] == 3
    assert result["zoo"]["times_ms"] == [5.0, 7.0, 9.0]  # warm-up calls are not in the timings
    assert result["peer"]["min_ms"] == 6.0 and result["peer"]["median_ms"] == 8.0
