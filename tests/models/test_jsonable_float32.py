"""float32 tensors in JSON: written with the 9 significant digits that identify each value, so the
answer is smaller and every value reads back as exactly the float32 it was; float64 stays exact."""
import json

import torch

from mnemoscope.models.jsonable import tensor_data


def test_float32_values_read_back_exactly_and_shorter():
    g = torch.Generator().manual_seed(0)
    t = torch.cat([torch.randn(20000, generator=g) * 10.0 ** torch.randint(-30, 30, (20000,), generator=g),
                   torch.tensor([0.0, -0.0, 1.0, 0.1, 1 / 3, 3.4028235e38, -3.4028235e38, 1.17549435e-38, 1e-45,
                                 float("nan"), float("inf")])]).float()
    data = tensor_data(t)
    back = torch.tensor([float("nan") if v is None else v for v in data], dtype=torch.float64).float()
    finite = torch.isfinite(t)
    assert torch.equal(back[finite], t[finite])
    assert all(v is None for v, ok in zip(data, finite.tolist()) if not ok)
    assert data[20003] == 0.100000001 and data[20002] == 1.0  # not 0.10000000149011612
    # activations and probabilities (|x| around 1e-3..1e2): about two thirds of the widened float64's text
    typical = torch.randn(20000, generator=g).float()
    assert len(json.dumps(tensor_data(typical))) < 0.75 * len(json.dumps(typical.double().tolist()))


def test_float64_is_kept_exactly():
    t = torch.tensor([0.1, 1 / 3, 1e-300], dtype=torch.float64)
    assert tensor_data(t) == [0.1, 1 / 3, 1e-300]
