"""Curation throughput and memory: the classical curate stack against raw PyAV decoding of the same videos,
side by side in one run, on one core; and the peak resident memory of curating a 60-second 1080p video.

    .venv/bin/python bench/curation.py [--videos 64] [--repeats 3] [--models]
    .venv/bin/python bench/curation.py --hd 16 [--repeats 3]
    .venv/bin/python bench/curation.py --memory-1080p [--seconds 60]
    .venv/bin/python bench/curation.py --dedup 10000 100000
    .venv/bin/python bench/curation.py --merge 10000 40000
    .venv/bin/python bench/curation.py --external 24 [--seed 0]
    .venv/bin/python bench/curation.py --hdr [--repeats 3]
    .venv/bin/python bench/curation.py --alpha [--repeats 3]
    .venv/bin/python bench/curation.py --workers 2 [--videos 64] [--repeats 3]
    .venv/bin/python bench/curation.py --ranks [--repeats 3]
    .venv/bin/python bench/curation.py --transitions 48 [--seed 0] [--repeats 3]
    .venv/bin/python bench/curation.py --resume 0.9 [--videos 64] [--repeats 3]

Throughput: the tiny profile's synthetic world (``--videos`` raw videos) is curated by
``curate_shard`` (decode, scene cuts, every classical score, hashes, thumbnails, encoding of kept clips,
shard writing) and decoded by plain PyAV (every frame to an RGB array), alternately ``--repeats`` times;
medians are printed as clips/s per core with their ratio, then each step's share of the curate time
(``--models`` adds the packaged OCR and NSFW detectors, timed separately). Every library is held to one
thread (OpenCV, faiss, onnxruntime, torch, the decoder), so the figures are per core.

Memory: a 60 s 1920x1080 H.264 video (FFmpeg's testsrc2 pattern with cuts to mandelbrot and smptehdbars)
is curated with the production profile's settings in a child process; its peak RSS (``VmHWM``) is
printed, next to that of decoding the same file whole into memory (``t2v.video.read_video``, the old path).

HDR: ``--hdr`` times the conversion of one 1920x1080 10-bit HEVC frame to the production output scale
(992x558 RGB, :func:`t2v.video.to_rgb`) for an SDR BT.709 source and for PQ and HLG sources of the same
picture (tone-mapped, :mod:`t2v.hdr`), alternately, and prints each one's cost and its ratio to SDR.
``--alpha`` does the same for 1920x1080 ProRes 4444 frames: without alpha, with an alpha that is opaque
throughout, and with transparent parts (composited over the background, :mod:`t2v.alpha`).

Side by side: ``--workers N`` curates one shard of the world with one process and with ``N``
(``video_workers``), alternately, and prints the wall-clock ratio and whether the outputs are the same bytes.

Resume: ``--resume F`` curates one shard of the world whole, and the same shard killed at the fraction
``F`` of its videos then run again (:mod:`components.curate.resume`), alternately, and prints the rerun's
CPU time against the clean run's and whether its outputs are the same bytes.

Merge: ``--merge N...`` writes four shard outputs holding N clip records shaped as the stage writes them
(1 % near-copies) and times their merge (cross-shard dedup, caps, manifest, parquet, report) in a child
process, with its peak RSS.

Ranks: ``--ranks`` times the percentiles of :func:`components.curate.filters.sharpness` (0.5th and 99.5th
of the blurred channels, 99.5th of the gradients, for every analysis frame of a clip) by
:func:`components.curate.filters.rank` against one ``np.partition`` per rank, alternately, on a world clip
(16 frames of 64x64) and a production one (24 frames of 256x144), and checks they agree.

Dedup: ``--dedup N...`` times the near-duplicate search on N synthetic clip signatures (random hashes with
1 % planted near-copies) and checks the copies are found.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


def _one_core() -> None:
    import cv2

    cv2.setNumThreads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass


def raw_decode(paths: list[Path], rgb: str | None = "reformatter") -> int:
    """Plain PyAV: every frame decoded and (``rgb``) turned into an RGB array, by one swscale context
    per stream (``"reformatter"``: a ``VideoReformatter`` kept, the fast way and the denominator) or by
    ``frame.to_ndarray(format="rgb24")`` (``"to_ndarray"``: the common idiom, which sets up a swscale
    context for every frame: 3x the CPU time of the other on the world's 64x64 frames with PyAV 18.1)."""
    import av

    frames = 0
    for p in paths:
        try:
            with av.open(str(p)) as c:
                st = c.streams.video[0]
                st.codec_context.thread_count = 1
                reformatter = av.video.reformatter.VideoReformatter()
                for f in c.decode(st):
                    if rgb == "reformatter":
                        reformatter.reformat(f, format="rgb24").to_ndarray()
                    elif rgb == "to_ndarray":
                        f.to_ndarray(format="rgb24")
                    frames += 1
        except Exception:  # the world's planted corrupt files
            continue
    return frames


def throughput(args) -> None:
    import yaml

    from components.curate.stage import curate_shard
    from t2v.config import load_curate_config
    from t2v.world import WorldConfig, generate_raw_videos

    _one_core()
    tmp = Path(tempfile.mkdtemp(prefix="bench-curate-"))
    if args.hd:  # one 1920x1080 video, the production profile's settings
        (tmp / "raw").mkdir()
        make_1080p(tmp / "raw" / "hd.mp4", args.hd)
        (tmp / "raw" / "metadata.jsonl").write_text(json.dumps({"file": "hd.mp4", "title": "1080p"}) + "\n")
        cfg = load_curate_config(REPO / "configs/step-video-t2v-30b/curate.yaml")
        what = f"one {args.hd} s 1920x1080 video (production profile)"
    else:
        world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
        world.update(num_raw_videos=args.videos)
        generate_raw_videos(WorldConfig(**world), tmp / "raw")
        cfg = load_curate_config(REPO / "configs/tiny/curate.yaml")
        what = f"{args.videos} world videos (tiny profile)"
    cfg = cfg.model_copy(update={"video_workers": 1})  # per core: this process's CPU time (--workers: side by side)
    paths = sorted((tmp / "raw").glob("*.mp4"))
    models = None
    if args.models:
        from components.curate.models import ModelScorers

        models = ModelScorers.from_config(cfg.model_copy(update={"ocr": True, "nsfw": True}), threads=1)
    import webdataset  # noqa: F401  (imported once per task: not part of the timed work)

    curate_s, decode_s, idiom_s, bare_s, steps, clips = [], [], [], [], [], 0
    # CPU seconds of this process (every library held to one thread): per-core figures that other jobs
    # on the machine do not inflate, as they do wall-clock time.
    clock = time.process_time
    for r in range(args.repeats):
        t0 = clock()
        summary = curate_shard(tmp / "raw", tmp / f"out{r}", cfg, force=True, models=models)
        curate_s.append(clock() - t0)
        clips = summary["clips"]
        steps.append(summary["step_seconds"])
        t0 = clock()
        raw_decode(paths)
        decode_s.append(clock() - t0)
        t0 = clock()
        raw_decode(paths, rgb="to_ndarray")
        idiom_s.append(clock() - t0)
        t0 = clock()
        raw_decode(paths, rgb=None)
        bare_s.append(clock() - t0)
    c, d, b = statistics.median(curate_s), statistics.median(decode_s), statistics.median(bare_s)
    i = statistics.median(idiom_s)
    print(f"{what}, {clips} clips, medians of {args.repeats} interleaved runs, CPU seconds on one core")
    print(f"  classical curate stack : {c:7.2f} s  {clips / c:8.1f} clips/s per core")
    print(f"  raw PyAV decode (rgb24): {d:7.2f} s  {clips / d:8.1f} clips/s per core  (one swscale context per stream)")
    print(f"  ratio (stack / decode throughput): {d / c:.2f}x")
    print(f"  (decode with to_ndarray(format='rgb24') per frame: {i:.2f} s, ratio to it {i / c:.2f}x; "
          f"without RGB conversion: {b:.2f} s, ratio to it {b / c:.2f}x)")
    names = sorted({k for s in steps for k in s})
    med = {k: statistics.median(s.get(k, 0.0) for s in steps) for k in names}
    enc = med.get("encode", 0.0)
    enc_cpu = c * enc / max(sum(med.values()), 1e-9)
    print(f"  without encoding the kept clips (x264 {cfg.output_preset}, ~{enc_cpu:.2f} s): ratio {d / (c - enc_cpu):.2f}x")
    model_keys = {k for k in names if k.startswith("model:") or k == "models"}
    wall = sum(v for k, v in med.items() if k != "models")  # "models" is the sum of the model:* steps
    if "models" in med:  # the classical stack alone: the run's CPU time less the models' share
        c_all, c = c, c * (1 - med["models"] / wall)
        print(f"  with the models: {c_all:.2f} s, {clips / c_all:.1f} clips/s per core; classical alone ~{c:.2f} s, "
              f"ratio {d / c:.2f}x")
    print(f"  share of the curate time per step (classical; wall-clock step timers, {wall:.2f} s in all):")
    for k in sorted(set(names) - model_keys, key=lambda k: -med[k]):
        print(f"    {k:14s} {med[k]:7.3f} s  {100 * med[k] / wall:5.1f} %")
    if model_keys:
        print("  models (separately):")
        for k in sorted(model_keys, key=lambda k: -med[k]):
            print(f"    {k:14s} {med[k]:7.3f} s  {100 * med[k] / wall:5.1f} %")


PEAK_RSS = r"""
import json, resource, sys, time
def peak_rss_mib():
    # VmHWM: the peak of this process's own memory since its exec (ru_maxrss keeps the high-water mark
    # of the process it was forked from, the bench, across the exec)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

CHILD = PEAK_RSS + r"""
sys.path.insert(0, sys.argv[1])
mode, path, out = sys.argv[2], sys.argv[3], sys.argv[4]
t0 = time.perf_counter()
if mode == "curate":
    from components.curate.stage import curate_shard
    from t2v.config import load_curate_config
    # one process: its peak is the figure (the profile's video_workers would curate in children)
    cfg = load_curate_config(sys.argv[1] + "/configs/step-video-t2v-30b/curate.yaml").model_copy(
        update={"video_workers": 1})
    import pathlib
    table = pathlib.Path(out) / "table.jsonl"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(json.dumps({"uri": path, "title": "1080p"}) + "\n")
    s = curate_shard(table, pathlib.Path(out) / "out", cfg, force=True)
    info = {"clips": s["clips"], "kept": s["kept"], "rejected": s["rejected"]}
elif mode == "decode":
    import av
    with av.open(path) as c:
        st = c.streams.video[0]
        st.codec_context.thread_count = 1
        n = sum(1 for f in c.decode(st) if f.to_ndarray(format="rgb24") is not None)
    info = {"frames": n}
else:
    from t2v.video import read_video
    frames, fps = read_video(path)
    info = {"frames": len(frames), "bytes": frames.nbytes}
info.update(seconds=time.perf_counter() - t0, peak_rss_mib=peak_rss_mib())
print(json.dumps(info))
"""


def make_1080p(path: Path, seconds: int) -> None:
    import av

    fps = 25
    sources = [("testsrc2", ""), ("mandelbrot", ""), ("smptehdbars", "")]
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = 1920, 1080, "yuv420p"
        st.options = {"preset": "ultrafast", "crf": "23"}
        n, part = 0, 0
        while n < seconds * fps:
            name, _ = sources[part % 3]
            g = av.filter.Graph()
            src = g.add(name, f"size=1920x1080:rate={fps}")
            fmt = g.add("format", "yuv420p")
            sink = g.add("buffersink")
            src.link_to(fmt)
            fmt.link_to(sink)
            g.configure()
            for _ in range(min(8 * fps, seconds * fps - n)):  # an 8 s scene per source
                f = sink.pull()
                f.pts = None
                for p in st.encode(f):
                    out.mux(p)
                n += 1
            part += 1
        for p in st.encode():
            out.mux(p)


def memory(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-1080p-"))
    video = tmp / "1080p.mp4"
    t0 = time.perf_counter()
    make_1080p(video, args.seconds)
    print(f"wrote {args.seconds} s of 1920x1080 H.264 ({video.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.0f} s")
    for mode in ("curate", "decode", "whole"):
        if mode == "whole" and not args.whole:
            continue
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(REPO), mode, str(video), str(tmp / mode)],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # curate: the production profile (output 544x992, x264 medium); decode: plain PyAV to RGB
        if res.returncode:
            print(f"{mode}: failed (rc {res.returncode}): {res.stderr.strip().splitlines()[-1:]}")
            continue
        print(f"{mode:7s}: " + res.stdout.strip().splitlines()[-1])
    # whole: t2v.video.read_video of the file (the old path, every frame in memory) needs ~2x 9 GiB here.


def dedup_bench(sizes: list[int]) -> None:
    import numpy as np

    from components.curate.dedup import find_duplicates
    from t2v.config import CurateConfig

    _one_core() if os.environ.get("BENCH_ONE_CORE") else None
    cfg = CurateConfig()
    for n in sizes:
        rng = np.random.default_rng(0)
        k = cfg.dedup_frames  # frame hashes and thumbnails per clip, as filters.clip_signature gives them
        hashes = rng.random((n, k, 64)) < 0.5
        thumbs = rng.integers(-60, 60, (n, k, 8, 8, 3)).astype(np.int8)
        src = np.arange(0, n - 1, 100)
        hashes[src + 1] = hashes[src] ^ (rng.random((len(src), k, 64)) < 0.05)
        thumbs[src + 1] = np.clip(thumbs[src].astype(int) + rng.integers(-1, 2, thumbs[src].shape), -128, 127)
        sigs = list(zip(hashes, thumbs, strict=True))
        t0 = time.perf_counter()
        found = find_duplicates(sigs, cfg)
        dt = time.perf_counter() - t0
        hit = sum(1 for s in src if found[s + 1] is not None and found[s + 1][0] == s)
        extra = sum(1 for i, f in enumerate(found) if f is not None) - hit
        print(f"dedup {n:>7d} clip signatures: {dt:6.2f} s, {hit}/{len(src)} planted copies found, {extra} others")


MERGE_CHILD = PEAK_RSS + r"""
sys.path.insert(0, sys.argv[1])
from components.curate.stage import merge_manifests
t0 = time.perf_counter()
s = merge_manifests(__import__("pathlib").Path(sys.argv[2]))
print(json.dumps({"clips": s["clips"], "kept": s["kept"], "duplicates": s["dropped_by_reason"].get("duplicate", 0),
                  "seconds": time.perf_counter() - t0,
                  "peak_rss_mib": peak_rss_mib()}))
"""


def write_shard_manifests(folder: Path, clips: int, shards: int = 4, seed: int = 0) -> int:
    """``shards`` curate shard outputs (manifest, scenes, done marker, no tars) holding ``clips`` clip
    records shaped as the stage writes them (five 64-bit hashes, 5x8x8 CIELAB thumbnails, eleven scores,
    a caption, a world spec), 1 % of them near-copies of an earlier clip; returns the bytes written."""
    import numpy as np

    from t2v.config import CurateConfig

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "curate-config.json").write_text(CurateConfig().model_dump_json())
    per_video = 5
    hashes = rng.integers(0, 256, (clips, 5, 8), dtype=np.uint8)
    thumbs = rng.integers(-60, 60, (clips, 5, 8, 8, 3)).astype(np.int8)
    src = np.arange(0, clips - 1, 100)
    hashes[src + 1] = hashes[src] ^ (rng.random((len(src), 5, 8)) < 0.02).astype(np.uint8)
    thumbs[src + 1] = thumbs[src]
    names = ["sharpness", "laplacian_var", "contrast", "brightness", "highlight", "motion", "frame_diff",
             "border_fraction", "subtitle", "watermark", "saturation"]
    scores = rng.random((clips, len(names))) * 100
    out = [open(folder / f"manifest-{k:03d}.jsonl", "w") for k in range(shards)]  # noqa: SIM115
    size = 0
    for i in range(clips):
        v = i // per_video
        rec = {
            "caption": f"a red circle moving left on a blue background, take {i}", "captions": {},
            "clip_id": f"raw_{v:07d}-{i % per_video * 40:06d}-{i % per_video * 40 + 40:06d}",
            "concept": f"concept {i % 97}", "drop_reasons": [], "duplicate_of": None, "end_frame": i % per_video * 40 + 40,
            "fps": 25, "height": 544, "keep": True, "license": "cc-by", "num_frames": 40,
            "phash": [bytes(h).hex() for h in hashes[i]], "scene_id": f"raw_{v:07d}_s{i % per_video:02d}",
            "scene_index": i % per_video, "scorers": {}, "scores": dict(zip(names, scores[i].round(4).tolist())),
            "shard": f"shards/clips-{v % shards:03d}-0000.tar", "source": "bench", "spec": {"background": "blue"},
            "start_frame": i % per_video * 40, "thumbs": "5x8:" + thumbs[i].tobytes().hex(), "title": f"video {v}",
            "video_id": f"raw_{v:07d}", "video_index": v, "width": 992,
        }
        line = json.dumps(rec, sort_keys=True) + "\n"
        size += len(line)
        out[v % shards].write(line)
    for k, f in enumerate(out):
        f.close()
        (folder / f"scenes-{k:03d}.jsonl").write_text("")
        (folder / f"done-{k:03d}.json").write_text(json.dumps({"fingerprint": "bench", "summary": {
            "num_shards": shards, "shard_index": k, "seconds": 0.0, "step_seconds": {}}}))
    return size


def merge_bench(sizes: list[int]) -> None:
    """The merge of a run's shard manifests (cross-shard dedup, caps, manifest, parquet, report) on
    ``sizes`` clips each: its time and peak resident memory, in a child process."""
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bench-merge-"))
        size = write_shard_manifests(tmp, n)
        res = subprocess.run([sys.executable, "-c", MERGE_CHILD, str(REPO), str(tmp)], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        if res.returncode:
            print(f"merge {n}: failed (rc {res.returncode}): {res.stderr.strip().splitlines()[-1:]}")
            continue
        info = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"merge {n:>8d} clips ({size / 2**20:7.1f} MiB of shard manifests): {info['seconds']:7.1f} s, "
              f"peak RSS {info['peak_rss_mib']:7.0f} MiB ({info['peak_rss_mib'] * 2**20 / n / 1024:.1f} KiB a clip), "
              f"{info['duplicates']} duplicates of {len(range(0, n - 1, 100))} planted")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=64)
    ap.add_argument("--hd", type=int, default=0, help="instead: one 1080p video of this many seconds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", action="store_true", help="add the packaged OCR and NSFW detectors")
    ap.add_argument("--memory-1080p", action="store_true")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--whole", action="store_true", help="also measure decoding the 1080p file whole")
    ap.add_argument("--dedup", type=int, nargs="*")
    ap.add_argument("--merge", type=int, nargs="*", help="instead: merge shard manifests of these many clips")
    ap.add_argument("--external", type=int, default=0, help="videos in the lavfi test set (P/R table)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the lavfi test set (build_external_set)")
    ap.add_argument("--hdr", action="store_true", help="instead: HDR to SDR conversion against SDR, per frame")
    ap.add_argument("--alpha", action="store_true", help="instead: compositing transparent frames, per frame")
    ap.add_argument("--workers", type=int, default=0, help="instead: one shard with 1 and with this many processes")
    ap.add_argument("--ranks", action="store_true", help="instead: sharpness percentiles, sampled bounds vs partition")
    ap.add_argument("--transitions", type=int, default=0, help="instead: dissolve P/R on this many lavfi videos")
    ap.add_argument("--resume", type=float, default=0.0,
                    help="instead: a clean shard against the rerun of one killed at this fraction of its videos")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.hdr:
        hdr_bench(args)
    elif args.alpha:
        alpha_bench(args)
    elif args.workers:
        workers_bench(args)
    elif args.ranks:
        ranks_bench(args)
    elif args.transitions:
        transitions_bench(args)
    elif args.resume:
        resume_bench(args)
    elif args.memory_1080p:
        memory(args)
    elif args.dedup:
        dedup_bench(args.dedup)
    elif args.merge:
        merge_bench(args.merge)
    elif args.external:
        external(args)
    else:
        throughput(args)




def ranks_bench(args) -> None:
    """filters.rank against np.partition on the arrays sharpness ranks: blurred clip frames' channels."""
    import cv2
    import numpy as np

    from components.curate import filters

    _one_core()
    rng = np.random.default_rng(0)
    for title, (t, h, w) in (("world clip, 16 x 64x64", (16, 64, 64)), ("production clip, 24 x 256x144", (24, 144, 256))):
        # a picture with edges and texture: blurred noise plus blocks, as uint8 RGB
        base = cv2.GaussianBlur(rng.random((t * h, w, 3), dtype=np.float32) * 255, (0, 0), 1.5).reshape(t, h, w, 3)
        base[:, h // 4 : h // 2, w // 3 : w // 2] += 80
        frames = np.clip(base, 0, 255).astype(np.uint8)
        _, blurred, grad = filters._sharpness_maps(frames, filters.contrast_channel(frames))
        n = blurred.shape[-1]
        ks = [round(q / 100 * (n - 1)) for q in (0.5, 99.5)]

        def by_partition(blurred=blurred, grad=grad, ks=ks):
            return [np.partition(blurred, k, axis=2)[..., k] for k in ks] + [np.partition(grad, ks[1], axis=2)[..., ks[1]]]

        def by_rank(blurred=blurred, grad=grad):
            lo, hi = np.moveaxis(filters.rank(blurred, [0.5, 99.5], axis=2), 2, 0)
            return [lo, hi, filters.rank(grad, 99.5, axis=2)]

        assert all(np.array_equal(a, b) for a, b in zip(by_partition(), by_rank(), strict=True))
        old, new = [], []
        for _ in range(args.repeats):
            for fn, into in ((by_partition, old), (by_rank, new)):
                t0 = time.process_time()
                for _ in range(10):
                    fn()
                into.append((time.process_time() - t0) / 10)
        a, b = statistics.median(old), statistics.median(new)
        print(f"{title}: np.partition per rank {a * 1e3:6.2f} ms, filters.rank {b * 1e3:6.2f} ms, "
              f"{a / b:.2f}x (same values)")


def _conversion_costs(files: dict[str, Path], repeats: int, title: str) -> None:
    """Time one frame of each file to 992x558 RGB (:func:`t2v.video.to_rgb`), alternately, and print each
    one's CPU cost and its ratio to the first file's."""
    import av

    from t2v.video import to_rgb

    frames = {}
    for name, path in files.items():
        with av.open(str(path)) as c:
            frames[name] = next(c.decode(video=0))
    reformatters = {name: av.video.reformatter.VideoReformatter() for name in files}
    times: dict[str, list[float]] = {name: [] for name in files}
    n = 10
    clock = time.process_time
    for _ in range(max(1, repeats)):
        for name, frame in frames.items():
            to_rgb(frame, 0, 992, 558, reformatter=reformatters[name])  # the swscale context set up
            t0 = clock()
            for _ in range(n):
                to_rgb(frame, 0, 992, 558, reformatter=reformatters[name])
            times[name].append((clock() - t0) / n)
    med = {name: statistics.median(v) for name, v in times.items()}
    first = next(iter(files))
    print(f"{title} to 992x558 RGB, medians of {repeats} interleaved runs of {n}, CPU ms on one core")
    for name in files:
        print(f"  {name:10s} {1000 * med[name]:7.2f} ms  ({med[name] / med[first]:.2f}x {first})")


def workers_bench(args) -> None:
    """Wall-clock time of one shard curated by one process and by ``--workers`` processes side by side
    (``video_workers``), alternately, and whether their outputs are the same bytes."""
    import hashlib

    import yaml

    from components.curate.stage import curate_shard
    from t2v.config import load_curate_config
    from t2v.world import WorldConfig, generate_raw_videos

    _one_core()
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
    world.update(num_raw_videos=args.videos)
    generate_raw_videos(WorldConfig(**world), tmp / "raw")
    base = load_curate_config(REPO / "configs/tiny/curate.yaml")
    counts = (1, args.workers)
    wall: dict[int, list[float]] = {n: [] for n in counts}
    digests: dict[int, dict[str, str]] = {}
    for r in range(args.repeats):
        for n in counts:
            out = tmp / f"out{n}-{r}"
            t0 = time.perf_counter()
            curate_shard(tmp / "raw", out, base.model_copy(update={"video_workers": n}), force=True)
            wall[n].append(time.perf_counter() - t0)
            files = [*out.glob("manifest-*.jsonl"), *out.glob("scenes-*.jsonl"), *out.glob("thumbs-*.jsonl"),
                     *(out / "shards").glob("*.tar")]
            digests[n] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}
    med = {n: statistics.median(v) for n, v in wall.items()}
    print(f"{args.videos} world videos (tiny profile), one shard, medians of {args.repeats} interleaved runs, "
          f"wall-clock seconds on this {os.cpu_count()}-CPU machine")
    for n in counts:
        print(f"  video_workers {n:3d}: {med[n]:7.2f} s  ({med[1] / med[n]:.2f}x one process)")
    same = digests[1] == digests[args.workers]
    print(f"  outputs the same bytes: {same} ({len(digests[1])} files: manifest, scenes, thumbnails, tars)")


class _Preempted(BaseException):
    """The shard's task ending in the middle (as a preempted pod's would), raised from inside it."""


def resume_bench(args) -> None:
    """CPU time of one shard curated whole against the rerun of the same shard killed at ``--resume``
    (a fraction of its videos), alternately, and whether the rerun's outputs are the clean run's bytes."""
    import hashlib

    import yaml

    import components.curate.stage as stage
    from t2v.config import load_curate_config
    from t2v.world import WorldConfig, generate_raw_videos

    _one_core()
    tmp = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
    world.update(num_raw_videos=args.videos)
    generate_raw_videos(WorldConfig(**world), tmp / "raw")
    cfg = load_curate_config(REPO / "configs/tiny/curate.yaml").model_copy(update={"video_workers": 1})
    rows = [json.loads(x) for x in (tmp / "raw" / "metadata.jsonl").read_text().splitlines() if x.strip()]
    stop_at = rows[int(len(rows) * args.resume)]["video_id"]
    original = stage._curate_video

    def preempted(row, *a, **k):
        if row.video_id == stop_at:
            raise _Preempted
        return original(row, *a, **k)

    def digest(out: Path) -> dict[str, str]:
        files = [*out.glob("manifest-*.jsonl"), *out.glob("scenes-*.jsonl"), *out.glob("thumbs-*.jsonl"),
                 *(out / "shards").glob("*.tar")]
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}

    clock = time.process_time
    whole, rerun, same = [], [], []
    for r in range(args.repeats):
        t0 = clock()
        stage.curate_shard(tmp / "raw", tmp / f"clean{r}", cfg, force=True)
        whole.append(clock() - t0)
        out = tmp / f"killed{r}"
        stage._curate_video = preempted
        try:
            stage.curate_shard(tmp / "raw", out, cfg)
        except _Preempted:
            pass
        finally:
            stage._curate_video = original
        t0 = clock()
        stage.curate_shard(tmp / "raw", out, cfg)
        rerun.append(clock() - t0)
        same.append(digest(out) == digest(tmp / f"clean{r}"))
    w, a = statistics.median(whole), statistics.median(rerun)
    print(f"{args.videos} world videos (tiny profile), one shard killed before video {stop_at} "
          f"({args.resume:.0%} of the table), medians of {args.repeats} interleaved runs, CPU seconds on one core")
    print(f"  clean run of the whole shard   : {w:7.2f} s")
    print(f"  rerun of the killed shard      : {a:7.2f} s  ({a / w:.2f} of a clean run; {w / a:.2f}x faster)")
    print(f"  rerun's outputs the clean run's bytes: {all(same)} (manifest, scenes, thumbnails, tars)")


def hdr_bench(args) -> None:
    from tests.fixtures.curate_media import lavfi_frames, write_hdr_video, write_video

    _one_core()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hdr-"))
    picture = lavfi_frames("testsrc2", (1920, 1080), 25, 0.12)
    files = {
        "sdr": write_video(tmp / "sdr.mkv", picture, codec="libx265", pix_fmt="yuv420p10le"),
        "pq": write_hdr_video(tmp / "pq.mkv", picture, "pq"),
        "hlg": write_hdr_video(tmp / "hlg.mkv", picture, "hlg"),
    }
    _conversion_costs(files, args.repeats, "one 1920x1080 10-bit HEVC frame")


def alpha_bench(args) -> None:
    import numpy as np

    from tests.fixtures.curate_media import lavfi_frames, write_alpha_video, write_video

    _one_core()
    tmp = Path(tempfile.mkdtemp(prefix="bench-alpha-"))
    picture = lavfi_frames("testsrc2", (1920, 1080), 25, 0.12)
    rgba = np.concatenate([picture, np.full((*picture.shape[:3], 1), 255, np.uint8)], axis=-1)
    rgba[:, :, :640, 3] = 0  # a third transparent, a band half transparent
    rgba[:, :200, :, 3] = 128
    opaque = rgba.copy()
    opaque[..., 3] = 255
    files = {
        "no alpha": write_video(tmp / "colour.mov", picture, codec="prores_ks", pix_fmt="yuv444p10le"),
        "opaque": write_alpha_video(tmp / "opaque.mov", opaque, "prores4444"),  # alpha all 255
        "alpha": write_alpha_video(tmp / "alpha.mov", rgba, "prores4444"),
    }
    _conversion_costs(files, args.repeats, "one 1920x1080 ProRes 4444 frame")


def external(args) -> None:
    """Precision and recall of the scene-cut detector and each filter on the lavfi test set, classical
    alone and with the packaged OCR detector, next to the synthetic world's."""
    import yaml

    from components.curate.stage import curate_shard, merge_manifests
    from t2v.config import load_curate_config
    from t2v.world import WorldConfig, generate_raw_videos
    from tests.fixtures.curate_external import build_external_set

    tmp = Path(tempfile.mkdtemp(prefix="bench-external-"))
    build_external_set(tmp / "ext", videos=args.external, seed=args.seed)
    world = yaml.safe_load((REPO / "configs/tiny/world.yaml").read_text())
    world.update(num_raw_videos=args.external, corrupt_files=1, seed=0)
    world.update({f"rate_{d}": 0.1 for d in ("static", "too_fast", "dark", "blurred", "subtitles", "watermark", "black_borders", "duplicate")})
    generate_raw_videos(WorldConfig(**world), tmp / "world")
    base = load_curate_config(REPO / "configs/tiny/curate.yaml")
    runs = {
        "world": (tmp / "world", base),
        "external": (tmp / "ext", base.model_copy(update={"output_height": 96, "output_width": 160})),
        "external+ocr": (tmp / "ext", base.model_copy(update={"output_height": 96, "output_width": 160, "ocr": True})),
    }
    table: dict[str, dict] = {}
    for name, (raw, cfg) in runs.items():
        out = tmp / f"out-{name}"
        s = curate_shard(raw, out, cfg, force=True)
        ev = merge_manifests(out, [s])["evaluation"]
        table[name] = {**ev["filters"], "scene_cuts": ev["scene_cuts"]}
    names = ["scene_cuts", *[k for k in table["world"] if k != "scene_cuts"]]
    print(f"{'':14s}" + "".join(f"{n:>26s}" for n in runs))
    print(f"{'':14s}" + "".join(f"{'n  precision  recall':>26s}" for _ in runs))
    for k in names:
        cells = []
        for n in runs:
            v = table[n][k]
            fmt = lambda x: "  -  " if x is None else f"{x:.2f}"  # noqa: E731
            cells.append(f"{v['support']:>10d}  {fmt(v['precision']):>7s}  {fmt(v['recall']):>6s}")
        print(f"{k:14s}" + "".join(f"{c:>26s}" for c in cells))


def transitions_bench(args) -> None:
    """Gradual transitions on lavfi shots joined by hard cuts and cross-dissolves (5-36 frames): found
    transitions against the planted ones (a find is right when it overlaps a planted dissolve; a planted
    one is found when a find overlaps it), hard cuts (within 2 frames, transition ends left out), and the
    kept clips that show 3 or more mixed frames, with the finder on and off."""
    from components.curate.stage import curate_shard
    from t2v.config import load_curate_config
    from tests.fixtures.curate_external import build_transition_set

    tmp = Path(tempfile.mkdtemp(prefix="bench-transitions-"))
    rows = {r["video_id"]: r for r in build_transition_set(tmp / "raw", videos=args.transitions, seed=args.seed)}
    planted = sum(len(r["transitions"]) for r in rows.values())
    base = load_curate_config(REPO / "configs/tiny/curate.yaml").model_copy(update={"output_height": 96, "output_width": 160})

    def overlap(a, b) -> int:
        return max(0, min(a[1], b[1]) - max(a[0], b[0]))

    print(f"{args.transitions} videos, {planted} dissolves, {sum(len(r['cuts']) for r in rows.values())} hard cuts "
          f"(seed {args.seed}); CPU: medians of {args.repeats} interleaved runs")
    _one_core()
    import webdataset  # noqa: F401  (imported once: not part of the timed work)

    modes = (("finder on", base.scene_transition_max_seconds), ("finder off", 0.0))
    cpu: dict[float, list[float]] = {seconds: [] for _, seconds in modes}
    for _ in range(args.repeats):
        for _, seconds in modes:
            t0 = time.process_time()
            curate_shard(tmp / "raw", tmp / f"out-{seconds}", base.model_copy(update={"scene_transition_max_seconds": seconds}), force=True)
            cpu[seconds].append(time.process_time() - t0)
    for label, seconds in modes:
        out = tmp / f"out-{seconds}"
        scenes = [json.loads(x) for x in (out / "scenes-000.jsonl").read_text().splitlines() if x.strip()]
        records = [json.loads(x) for x in (out / "manifest-000.jsonl").read_text().splitlines() if x.strip()]
        found = right = hit = cut_tp = cut_found = 0
        for sc in scenes:
            truth = rows[sc["video_id"]]
            spans = [tuple(x) for x in sc.get("transitions", [])]
            found += len(spans)
            right += sum(any(overlap(s, t) for t in truth["transitions"]) for s in spans)
            hit += sum(any(overlap(s, t) for s in spans) for t in truth["transitions"])
            ends = {x for s in spans for x in s}
            hard = [c for c in sc["cuts"] if c not in ends]
            cut_found += len(hard)
            cut_tp += sum(any(abs(c - t) <= 2 for t in truth["cuts"]) for c in hard)
        cut_truth = sum(len(r["cuts"]) for r in rows.values())
        kept = [r for r in records if r.get("keep")]
        mixed = sum(any(overlap((r["start_frame"], r["end_frame"]), t) >= 3 for t in rows[r["video_id"]]["transitions"]) for r in kept)
        print(f"  {label:10s}: transitions found {found}, precision {right / max(found, 1):.2f}, recall {hit / max(planted, 1):.2f}; "
              f"hard cuts precision {cut_tp / max(cut_found, 1):.2f}, recall {cut_tp / max(cut_truth, 1):.2f}; "
              f"kept clips {len(kept)}, of which show mixed frames {mixed}; {statistics.median(cpu[seconds]):.2f} CPU-s")
    on, off = (statistics.median(cpu[s]) for _, s in modes)
    print(f"  CPU with the finder / without: {on / off:.3f}x")


if __name__ == "__main__":
    main()
