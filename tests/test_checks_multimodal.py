"""Chapter 13's exercise checkers accept right answers and reject wrong ones, without raising."""

import numpy as np

from lmbook.checks.multimodal import check_info_nce, check_patchify


def test_patchify_checker():
    def right(images, p):
        b, h, w, c = images.shape
        x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, -1, p * p * c)

    def column_major(images, p):  # patches in the wrong order
        b, h, w, c = images.shape
        x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 3, 1, 2, 4, 5)
        return x.reshape(b, -1, p * p * c)

    def naive_reshape(images, p):  # mixes rows of different patches
        b, h, w, c = images.shape
        return images.reshape(b, -1, p * p * c)

    assert check_patchify(right, verbose=False).passed
    assert not check_patchify(column_major, verbose=False).passed
    assert not check_patchify(naive_reshape, verbose=False).passed
    assert not check_patchify(lambda *a: 1 / 0, verbose=False).passed


def test_info_nce_checker():
    def ce(s):
        s = s - s.max(1, keepdims=True)
        return np.mean(np.log(np.exp(s).sum(1)) - np.diag(s))

    def right(u, v, t):
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        s = u @ v.T / t
        return 0.5 * (ce(s) + ce(s.T))

    def one_way(u, v, t):
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return ce(u @ v.T / t)

    def unnormalised(u, v, t):
        s = u @ v.T / t
        return 0.5 * (ce(s) + ce(s.T))

    assert check_info_nce(right, verbose=False).passed
    assert not check_info_nce(one_way, verbose=False).passed
    assert not check_info_nce(unnormalised, verbose=False).passed
    assert not check_info_nce(lambda *a: (_ for _ in ()).throw(NotImplementedError("x")), verbose=False).passed
