"""The depth stream: 16-bit log-depth within its analytic error bound, chunks that read back exactly, and a
DW-Mesh built from the decoded depth that has the same stretched faces as the original's."""

import numpy as np
import torch

from ex4d.mesh.build import build_dw_mesh
from ex4d.view.stream import LOG16_LEVELS, decode_log16, encode_log16, pack_chunk, pack_frames, unpack_chunk
from tests.view.conftest import scene_clip


def test_log16_error_is_within_half_a_step():
    rng = np.random.default_rng(0)
    depth = np.exp(rng.uniform(np.log(0.5), np.log(2500.0), (3, 20, 30))).astype(np.float32)
    codes, lo, step = encode_log16(depth)
    back = decode_log16(codes, lo, step)
    # the codes span the full range: min -> 0, max -> 65535
    assert (codes.reshape(3, -1).min(1) == 0).all() and (codes.reshape(3, -1).max(1) == LOG16_LEVELS).all()
    expected_step = (np.log(depth.astype(np.float64).max((1, 2))) - np.log(depth.astype(np.float64).min((1, 2)))) / 65535
    np.testing.assert_allclose(step, expected_step, rtol=1e-12)
    rel = np.abs(np.log(back.astype(np.float64)) - np.log(depth.astype(np.float64)))
    # half a quantisation step plus float32 rounding of the decoded value
    assert (rel <= step[:, None, None] / 2 + 1.2e-7).all()
    assert rel.max() < 7e-5  # 1:5000 range


def test_constant_frame_and_exact_f32_chunk():
    depth = np.full((2, 4, 6), 3.25, np.float32)
    depth[1] = np.arange(24, dtype=np.float32).reshape(4, 6) + 0.5
    frames = np.random.default_rng(1).integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    codes, lo, step = encode_log16(depth[:1])
    assert (codes == 0).all() and step[0] == 0 and np.allclose(decode_log16(codes, lo, step), 3.25, rtol=1e-7)

    head, f_back, d_back = unpack_chunk(pack_chunk(7, frames, depth, "f32"))
    assert head["start"] == 7 and head["count"] == 2 and (head["height"], head["width"]) == (4, 6)
    np.testing.assert_array_equal(f_back, frames)
    np.testing.assert_array_equal(d_back, depth)  # lossless

    head, f_back, d_back = unpack_chunk(pack_chunk(0, frames, depth, "log16"))
    np.testing.assert_array_equal(f_back, frames)
    np.testing.assert_allclose(d_back, depth, rtol=1e-4)

    head, f_back, _ = unpack_chunk(pack_frames(3, frames))
    assert head["encoding"] == "none" and head["start"] == 3
    np.testing.assert_array_equal(f_back, frames)


def test_chunk_layout_is_aligned_for_typed_arrays():
    frames = np.zeros((3, 5, 7, 3), np.uint8)
    data = pack_chunk(0, frames, np.ones((3, 5, 7), np.float32), "log16")
    header_len = int.from_bytes(data[8:12], "little")
    assert (12 + header_len) % 4 == 0  # the page views the planes as Uint16Array / Float32Array in place
    assert len(data) == 12 + header_len + 3 * 5 * 7 * (4 + 2)


def test_mesh_from_decoded_depth_has_the_same_stretched_faces():
    frames, depth, K = scene_clip(num_frames=2, size=128)
    _, _, decoded = unpack_chunk(pack_chunk(0, frames, depth, "log16"))
    K_t = torch.from_numpy(K)
    original = build_dw_mesh(torch.from_numpy(depth), torch.from_numpy(frames), K_t)
    quantised = build_dw_mesh(torch.from_numpy(decoded), torch.from_numpy(frames), K_t)
    flips = (original.face_valid != quantised.face_valid).float().mean().item()
    occluder_flips = ((original.colors[..., 3] == 0) != (quantised.colors[..., 3] == 0)).float().mean().item()
    assert original.face_valid.logical_not().any()  # the scene has depth edges to get right
    assert flips < 1e-4 and occluder_flips < 1e-4, (flips, occluder_flips)
    np.testing.assert_allclose(quantised.vertices.numpy(), original.vertices.numpy(), rtol=1e-4)
