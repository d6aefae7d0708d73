"""Human preference labels: a sheet exported from a round's candidates, filled by a script as raters
would, and imported, gives the pairs the raters chose; bad rows are named."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from components.dpo.stage import pairs_from_labels, write_labelling_sheet
from t2v.preferences import LabelsError, labelled_pairs, read_labels
from t2v.shards import LatentSample


def _prompts(n: int) -> list[LatentSample]:
    rng = np.random.default_rng(0)
    return [
        LatentSample(
            key=f"clip-{i}", video=np.zeros((2, 4, 2, 2), np.float32), image=np.zeros((1, 4, 2, 2), np.float32),
            clip_states=rng.normal(size=(3, 8)).astype(np.float32), clip_mask=np.ones(3, bool),
            llm_states=rng.normal(size=(5, 8)).astype(np.float32), llm_mask=np.ones(5, bool),
            meta={"caption": f"a red square moving left, take {i}"},
        )
        for i in range(n)
    ]


def test_labels_exported_filled_by_raters_and_imported_give_the_raters_pairs(tmp_path):
    prompts, k = _prompts(3), 4
    latents = torch.randn(3, k, 2, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    videos = [[np.full((5, 16, 16, 3), 40 * (p + c), np.uint8) for c in range(k)] for p in range(3)]
    rewards = np.array([[0.1, 0.9, 0.5, 0.5], [0.7, 0.2, 0.3, 0.8], [0.0, 0.0, 0.6, 0.1]])
    folder = (tmp_path / "round-0").as_uri()
    sheet = write_labelling_sheet(latents, videos, prompts, rewards, folder, fps=8)
    labelling = tmp_path / "round-0" / "labelling"
    assert sheet.endswith("labelling/sheet.html") and (labelling / "sheet.html").is_file()
    page = (labelling / "sheet.html").read_text()
    rows = list(csv.DictReader(io.StringIO((labelling / "labels.csv").read_text())))
    assert [r["pair_id"] for r in rows] == [f"p{p:03d}-c{a}-c{a + 1}" for p in range(3) for a in (0, 2)]
    assert [r["suggested"] for r in rows] == ["b", "tie", "a", "b", "tie", "a"]
    for row in rows:  # both videos are on the page and on disk
        assert row["video_a"] in page and (labelling / row["video_a"]).stat().st_size > 0

    # two raters fill the sheet: rater 1 everywhere, rater 2 on the first three pairs
    choice_1 = ["a", "b", "b", "tie", "a", "b"]
    choice_2 = ["a", "a", "b"]
    filled = [dict(r, preferred=c, rater="r1") for r, c in zip(rows, choice_1)]
    filled += [dict(r, preferred=c, rater="r2") for r, c in zip(rows, choice_2)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(filled)
    (labelling / "labels.csv").write_text(buffer.getvalue())

    pairs = pairs_from_labels((labelling / "labels.csv").as_uri())
    # pair 0: a, a -> a; pair 1: b vs a -> split, dropped; pair 2: b, b -> b; pair 3: tie -> dropped;
    # pair 4: a; pair 5: b
    expected = {"p000-c0-c1": (0, 0, 1), "p001-c0-c1": (1, 1, 0), "p002-c0-c1": (2, 0, 1), "p002-c2-c3": (2, 3, 2)}
    assert [p.meta["pair_id"] for p in pairs] == sorted(expected)
    for pair in pairs:
        prompt, preferred, rejected = expected[pair.meta["pair_id"]]
        assert np.array_equal(pair.preferred, latents[prompt, preferred].numpy())
        assert np.array_equal(pair.rejected, latents[prompt, rejected].numpy())
        assert np.array_equal(pair.text["llm_states"], prompts[prompt].llm_states)
        assert pair.meta["caption"] == prompts[prompt].meta["caption"]


def test_bad_rows_are_named():
    header = "pair_id,prompt,video_a,video_b,suggested,preferred,rater,note\n"
    with pytest.raises(LabelsError, match="line 3: preferred 'left' must be a, b or tie"):
        read_labels(header + "p1,x,a.mp4,b.mp4,,a,,\np2,x,a.mp4,b.mp4,,left,,\n")
    with pytest.raises(LabelsError, match="line 2: pair 'p9' is not on this sheet"):
        read_labels(header + "p9,x,a.mp4,b.mp4,,b,,\n", known_pairs={"p1"})
    with pytest.raises(LabelsError, match="missing column"):
        read_labels("pair_id,choice\np1,a\n")
    assert read_labels(header + "p1,x,a.mp4,b.mp4,a,,,\n") == []  # not labelled yet


def test_votes_need_a_strict_majority():
    from t2v.preferences import Label

    labels = [Label("p1", "a"), Label("p1", "a"), Label("p1", "b"), Label("p2", "a"), Label("p2", "tie"), Label("p3", "b")]
    assert labelled_pairs(labels) == [("p1", "a"), ("p3", "b")]
