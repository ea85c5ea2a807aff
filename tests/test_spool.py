"""Worker processes hand a batch's images to the build process through one spool file
(builder/executors/spool.py): the same bytes come back, nothing is left on disk, and a
spool that cannot be written falls back to the pipe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.executors.spool import SpooledBatch, receive, spool_images
from builder.records import (
    Candidate,
    Checked,
    Fetched,
    HttpInfo,
    ImageInfo,
    Licensed,
    LicenseDecision,
    Reason,
    Rejection,
)


def checked(i: int, data: bytes) -> Checked:
    candidate = Candidate(source="s", source_id=str(i), url=f"https://example.org/{i}.jpg")
    decision = LicenseDecision(spdx="CC0-1.0", url=None, name="CC0", attribution_required=False,
                               share_alike=False, evidence=(), policy="commercial")
    fetched = Fetched(licensed=Licensed(candidate, decision), data=data,
                      retrieved_at="2026-01-01T00:00:00Z",
                      http=HttpInfo(200, None, None, "image/jpeg"))
    image = ImageInfo(mime="image/jpeg", ext="jpg", width=1, height=1, sha256="0" * 64,
                      sha1="0" * 40)
    return Checked(fetched=fetched, image=image)


def batch() -> list[object]:
    return [checked(0, os.urandom(300_000)), Rejection(Reason.HTTP_ERROR, "404"),
            checked(2, b"\xff\xd8tiny"), checked(3, os.urandom(70_000))]


def test_a_batchs_images_come_back_whole_from_one_file_that_is_gone_once_received(
        tmp_path: Path) -> None:
    outcomes = batch()

    sent = spool_images(outcomes, str(tmp_path))

    assert isinstance(sent, SpooledBatch)
    assert [p.name for p in tmp_path.iterdir()] == [Path(sent.path).name]
    assert Path(sent.path).stat().st_size == 300_000 + 6 + 70_000
    received = receive(sent)
    assert list(tmp_path.iterdir()) == []  # unlinked as soon as it was mapped
    assert received[1] == outcomes[1]
    for i in (0, 2, 3):
        assert bytes(received[i].fetched.data) == outcomes[i].fetched.data
        assert len(received[i].fetched.data) == len(outcomes[i].fetched.data)
        assert received[i].image == outcomes[i].image


def test_a_spool_that_cannot_be_written_sends_the_images_through_the_pipe(tmp_path: Path
                                                                          ) -> None:
    outcomes = batch()

    unwritable = spool_images(outcomes, str(tmp_path / "gone"))
    no_spool = spool_images(outcomes, None)
    nothing_to_move = spool_images([outcomes[1]], str(tmp_path))

    assert unwritable == outcomes and no_spool == outcomes and nothing_to_move == [outcomes[1]]
    assert receive(unwritable) == outcomes
    assert list(tmp_path.iterdir()) == []


def test_a_spool_file_removed_before_it_was_read_is_named_as_such(tmp_path: Path) -> None:
    sent = spool_images(batch(), str(tmp_path))
    assert isinstance(sent, SpooledBatch)
    Path(sent.path).unlink()  # a cleaner of temporary files

    with pytest.raises(FileNotFoundError, match="vanished from the temporary directory"):
        receive(sent)
