"""The timestamp rule: what FFmpeg's best-effort timestamps give, on the sequences broken files produce."""

from __future__ import annotations

import itertools

import av
import pytest

from vidrestore.io.timestamps import StreamClock, TimestampRepair


def run(fix: TimestampRepair, pairs: list[tuple[int | None, int | None]]) -> list[int]:
    out: list[int] = []
    for pts, dts in pairs:
        out += fix.push(pts, dts)
    return out + fix.flush()


def packed_b_frames(n: int) -> list[tuple[int | None, int | None]]:
    """DivX/Xvid AVI with packed B-frames, as PyAV reports the decoded frames: display order, but each
    B-frame pair swaps its pts (the packet it came in), and the last frame has no dts."""
    pts = list(range(1, n + 1))
    for i in [*range(3, n - 3, 3), n - 2]:
        pts[i], pts[i + 1] = pts[i + 1], pts[i]
    dts: list[int | None] = list(range(1, n + 1))
    dts[-1] = None
    return list(zip(pts, dts))


def test_packed_b_frames_get_their_display_times() -> None:
    pairs = packed_b_frames(270)
    assert pairs[:8] == [(1, 1), (2, 2), (3, 3), (5, 4), (4, 5), (6, 6), (8, 7), (7, 8)]
    assert pairs[-2:] == [(270, 269), (269, None)]
    fix = TimestampRepair(nominal=1)
    assert run(fix, pairs) == list(range(1, 271))  # what ffprobe's best_effort_timestamp gives: no shift
    assert fix.repaired == sum(p != t for (p, _), t in zip(pairs, range(1, 271)))  # the swapped ones, counted
    assert fix.resets == 0


def test_clean_variable_frame_rate_times_are_kept_as_they_are() -> None:
    pts = [0, 33, 67, 100, 600, 633, 1633, 1673, 1690]
    fix = TimestampRepair(nominal=33)
    assert run(fix, [(p, p) for p in pts]) == pts
    assert fix.repaired == 0


def test_missing_pts_come_from_the_dts_then_from_the_frame_rate() -> None:
    fix = TimestampRepair(nominal=10)
    assert run(fix, [(0, 0), (10, 10), (None, 20), (None, None), (40, 40)]) == [0, 10, 20, 30, 40]
    assert fix.repaired == 2


def test_a_stuck_pts_gives_way_to_a_good_dts() -> None:
    fix = TimestampRepair(nominal=512)
    pairs: list[tuple[int | None, int | None]] = [(0, i * 512) for i in range(10)]
    assert run(fix, pairs) == [i * 512 for i in range(10)]


def test_a_repeated_time_moves_just_after_the_previous_one() -> None:
    fix = TimestampRepair(nominal=10, window=0)
    assert run(fix, [(0, None), (10, None), (10, None), (30, None)]) == [0, 10, 20, 30]
    assert fix.repaired == 1


def test_a_reset_keeps_the_real_spacing_after_it() -> None:
    # two recordings joined: the second restarts at 0 and is variable-rate
    first = [i * 40 for i in range(50)]
    second = [0, 40, 80, 400, 440, 1440, 1480]
    fix = TimestampRepair(nominal=40, jump=1000)
    out = run(fix, [(p, p) for p in first + second])
    assert out[:50] == first
    assert out[50] == first[-1] + 40  # carries on one frame later
    assert [b - a for a, b in itertools.pairwise(out[50:])] == [40, 40, 320, 40, 1000, 40]  # not made-up constant rate
    assert fix.resets == 1 and fix.repaired == 0


def test_stream_clock_undoes_the_same_reset_in_a_copied_stream() -> None:
    clock = StreamClock(jump=48000)
    times = []
    for ts in [*range(0, 48000 * 2, 1024), *range(0, 4096, 1024)]:
        packet = av.Packet(b"x")
        packet.pts = packet.dts = ts
        packet.duration = 1024
        clock(packet)
        times.append(packet.pts)
    assert clock.resets == 1
    assert all(b - a == 1024 for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("window", [0, 2, 4, 8])
def test_output_always_increases(window: int) -> None:
    import random

    rng = random.Random(window)
    pairs: list[tuple[int | None, int | None]] = [
        (rng.choice([None, rng.randint(-50, 500)]), rng.choice([None, rng.randint(-50, 500)])) for _ in range(300)
    ]
    out = run(TimestampRepair(nominal=3, window=window), pairs)
    assert len(out) == 300
    assert all(b > a for a, b in itertools.pairwise(out))


def test_overlapping_subtitle_cues_are_no_reset() -> None:
    clock = StreamClock(jump=1000)
    starts = []
    for ts, dur in [(0, 5000), (2000, 1000), (2500, 4000), (9000, 500)]:  # a long cue, then overlapping ones
        packet = av.Packet(b"x")
        packet.pts = packet.dts = ts
        packet.duration = dur
        clock(packet)
        starts.append(packet.pts)
    assert starts == [0, 2000, 2500, 9000] and clock.resets == 0
