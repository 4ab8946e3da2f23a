"""Reading YouTube-8M's video-level TFRecord files without TensorFlow.

TFRecord framing: each record is a u64 length, the masked crc32c of those 8 bytes, the data and
the masked crc32c of the data; both checksums are checked (``crc32c`` package) before a record
is parsed (``tfrecord`` package's protobuf classes) into (video id, 1152 features, labels).
"""

from __future__ import annotations

import os
import struct

import numpy as np

__all__ = ["AUDIO_DIM", "RGB_DIM"]

RGB_DIM = 1024
AUDIO_DIM = 128

# TFRecord framing: u64 length, masked crc32c of those 8 bytes, the data, masked crc32c of the data.
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def _mask(crc: int) -> int:
    """TFRecord's masking of a crc32c: rotated right by 15 bits plus a constant, mod 2**32."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _record_payloads(path: str):
    """Yield (record number, bytes) of one uncompressed TFRecord file, checking both CRCs.

    A length field is trusted only once its own CRC matches and it fits in what is left of the
    file, so a damaged header can neither allocate a huge buffer nor be read as data.
    """
    from crc32c import crc32c

    def corrupt(detail: str) -> ValueError:
        return ValueError(f"{path}: record {number}: truncated or corrupt TFRecord ({detail})")

    size = os.path.getsize(path)
    number, offset = 0, 0
    with open(path, "rb") as fh:
        while offset < size:
            header = fh.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise corrupt(f"the file ends inside the header at byte {offset}")
            length, length_crc = _HEADER.unpack(header)
            if _mask(crc32c(header[:8])) != length_crc:
                raise corrupt(f"the length field at byte {offset} fails its CRC")
            left = size - offset - _HEADER.size - _CRC.size
            if length > left:
                raise corrupt(f"the record at byte {offset} declares {length} bytes, but only {max(left, 0)} are left")
            payload = fh.read(length)
            footer = fh.read(_CRC.size)
            if len(payload) != length or len(footer) != _CRC.size:
                raise corrupt(f"the file ends inside the record at byte {offset}")
            if _mask(crc32c(payload)) != _CRC.unpack(footer)[0]:
                raise corrupt(f"the data of the record at byte {offset} fail their CRC")
            yield number, payload
            offset += _HEADER.size + length + _CRC.size
            number += 1


def _records(path: str):
    """Yield (record number, parsed Example) of one TFRecord file; errors name file and record."""
    from google.protobuf.message import DecodeError
    from tfrecord import example_pb2

    for number, payload in _record_payloads(path):
        example = example_pb2.Example()
        try:
            example.ParseFromString(payload)
        except DecodeError as err:
            raise ValueError(f"{path}: record {number}: not a tf.train.Example ({err})") from err
        yield number, example


def _parse(example, path: str, number: int, num_entities: int):
    feature = example.features.feature
    for key in ("id", "labels", "mean_rgb", "mean_audio"):
        if key not in feature:
            raise ValueError(f"{path}: record {number}: feature {key!r} is missing")
    ids = feature["id"].bytes_list.value
    video_id = bytes(ids[0]) if ids else b""
    labels = np.asarray(feature["labels"].int64_list.value, dtype=np.int64)
    rgb = np.asarray(feature["mean_rgb"].float_list.value, dtype=np.float32)
    audio = np.asarray(feature["mean_audio"].float_list.value, dtype=np.float32)
    where = f"{path}: record {number} (id {video_id.decode('utf-8', 'replace')!r})"
    if rgb.size != RGB_DIM or audio.size != AUDIO_DIM:
        raise ValueError(
            f"{where}: mean_rgb must have {RGB_DIM} and mean_audio {AUDIO_DIM} values, got {rgb.size} and {audio.size}"
        )
    x = np.concatenate([rgb, audio])
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: features hold NaN or inf")
    bad = labels[(labels < 0) | (labels >= num_entities)]
    if bad.size:
        raise ValueError(f"{where}: label {int(bad[0])} out of range [0, {num_entities}) of the vocabulary")
    return video_id, x, labels
