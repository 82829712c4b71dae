"""Segments: the unit of work for long videos, so that a run can resume, and run in parallel.

A video longer than twice ``pipeline.segment_seconds`` is cut at video keyframes (found by
demuxing only, from the packets' keyframe flags) into segments of about that length. Each segment
is decoded from a keyframe far enough before its start that tracking, smoothing and temporal
fusion are warmed up (``warm`` frames go through the face stages and are dropped), and far enough
past its end for the smoother's look-ahead, gap filling and fades (``ahead`` frames); only its own
frames are encoded, into a segment file, with the same encoder settings for every segment. The
join copies the segments' video packets (no re-encode) and muxes the original's audio, subtitle,
data and attachment streams by stream copy, through the same writer a whole-file run uses, then
moves the file into place atomically.

The segment files and a manifest live in a work folder beside the output
(``.NAME.segments/``). The manifest holds the input's identity (size, mtime, a hash of its head),
the configuration's hash, the models' checksums and each segment's state and checksum. A rerun
picks up every finished segment whose checksum holds (``--resume`` insists on it; ``--no-resume``
starts afresh); the work folder goes when the output is in place.

An input the planner cannot trust for cutting (a demuxing error, packets flagged corrupt, packets
without a time, times that jump back) runs as one whole file, as before.

The modules, in the order of a run: ``plan`` (cut at keyframes), ``manifest`` (the work folder and
what resumes), ``render`` (one segment through the stages), ``join`` (the segments into the output).
"""
