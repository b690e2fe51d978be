"""The fluid twin on torch: same model and results as :class:`envs.twin.FluidTwin`, on CPU
or GPU, differentiable (MLU is a max, so its gradient flows to the bottleneck link).

Inputs may be numpy arrays or tensors; outputs are tensors on ``device``.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
from scipy.sparse import csr_matrix

from topologies import PathSet

from .twin import DENSE_LIMIT, FluidTwin, QueueModel, _per_capacity


def _sparse(matrix: csr_matrix, device, dtype) -> torch.Tensor:
    coo = matrix.tocoo()
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    return torch.sparse_coo_tensor(indices, torch.as_tensor(coo.data, dtype=dtype), coo.shape,
                                   device=device, check_invariants=False).coalesce()


class SparseProduct:
    """A constant sparse matrix times dense columns, ``(rows, cols) @ (cols, B)``. COO while
    autograd records the product (its backward is fast), CSR otherwise: CSR's forward is ~15×
    faster on the CPU (kdl's 0.9 M hops: 3 ms against 50 ms), its backward ~8× slower. The CSR
    copy is made on first use, so a twin that only trains never holds it."""

    def __init__(self, matrix: csr_matrix, device, dtype) -> None:
        self.coo = _sparse(matrix, device, dtype)

    @functools.cached_property
    def csr(self) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return self.coo.to_sparse_csr()

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return torch.sparse.mm(self.coo, x)
        return self.csr @ x


class TorchFluidTwin(FluidTwin):
    """:class:`FluidTwin` with torch tensors (default float64 so results match numpy)."""

    xp = torch

    def __init__(self, pathset: PathSet, queue: QueueModel | None = None, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, dense_limit: int = DENSE_LIMIT, max_iterations: int = 200,
                 tolerance: float = 1e-12) -> None:
        self.device = torch.device(device)
        super().__init__(pathset, queue, dtype=dtype, dense_limit=dense_limit, max_iterations=max_iterations,
                         tolerance=tolerance)

    def _setup(self, *, incidence: csr_matrix, hop_to_link: csr_matrix, upstream: csr_matrix | None,
               **arrays: np.ndarray) -> None:
        for key, value in arrays.items():
            dtype = torch.bool if value.dtype == bool else torch.int64 if value.dtype.kind in "iu" else self.dtype
            setattr(self, f"_{key}", torch.as_tensor(value, dtype=dtype, device=self.device))
        utilization = _per_capacity(incidence, arrays["capacities"])
        if self.dense:
            self._A = torch.as_tensor(incidence.toarray(), dtype=self.dtype, device=self.device)
            self._AT = self._A.T.contiguous()
            self._UT = torch.as_tensor(utilization.toarray().T, dtype=self.dtype, device=self.device).contiguous()
        else:
            self._A = SparseProduct(incidence, self.device, self.dtype)
            self._AT = SparseProduct(incidence.T.tocsr(), self.device, self.dtype)
            self._U = SparseProduct(utilization.tocsr(), self.device, self.dtype)
        self._HL = SparseProduct(hop_to_link, self.device, self.dtype)
        self._UP = None if upstream is None else SparseProduct(upstream, self.device, self.dtype)

    def _asarray(self, x) -> torch.Tensor:
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = x.copy()  # torch cannot wrap read-only numpy memory
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    def _scalar(self, x) -> float:
        return float(x.detach())

    def _machine_epsilon(self) -> float:
        return float(torch.finfo(self.dtype).eps)

    def _take(self, x, index):
        return torch.index_select(x, 1, index)

    def _scale_in_place(self, x, factor):
        return x * factor  # out of place: autograd may need x

    def _shared_loads(self, demands, ratios):
        if self.dense:
            return super()._shared_loads(demands, ratios)
        # sparse: broadcast the one routing over the batch (keeps autograd simple)
        return self._slots_to_links(self._take(demands, self._slot_pair) * ratios.reshape(1, -1))
