"""The conditioned-network protocol: what adaptation, saving and training may ask of a network.

Code outside a network's own file never reaches into its attributes (``net.decoder``,
``net.head``): it asks the protocol. A registered network subclasses :class:`ConditionedNetwork` and
provides

- ``forward(image [B,C,D,H,W], expert LongTensor[B], *, prompts=None) -> NetOutput``;
- ``divisor`` and ``check_input_size(spatial)``;
- ``role_modules() -> {role: [modules]}`` for its shared parts: ``shared_encoder``,
  ``shared_decoder``, ``head``, and any added module under a name of its own (an attention block);
- ``make_head() -> nn.Module``: a copy of the shared head, the start of an expert's private head;
- ``feature_names``: the features it can return, and ``returned_features``: those its output
  carries (the constructor's ``features`` picks them).

The base class gives everything else from those: :meth:`parameter_groups` (every parameter in
exactly one role; the CIN rows under ``expert_rows``, per-expert heads under ``expert_heads``,
per-expert low-rank residuals under ``expert_low_rank``), adding and removing an expert's rows,
per-expert heads and low-rank residuals (on the :class:`~experts.networks.lowrank.LowRankSite`
modules a network places beside its convolutions), and merging row blocks for saving.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from experts.networks.cin import ConditionalInstanceNorm
from experts.networks.lowrank import LowRankSite

__all__ = ["ConditionedNetwork", "SHARED_ROLES", "ROW_ROLES"]

#: roles every network fills (an added module brings a role of its own)
SHARED_ROLES = ("shared_encoder", "shared_decoder", "head")
#: roles that belong to single experts
ROW_ROLES = ("expert_rows", "expert_heads", "expert_low_rank")


class ConditionedNetwork(nn.Module):
    """Base class of the registered networks (see the module docstring)."""

    #: extra input channels a promptable network takes (``prompts [B, P, D, H, W]``)
    prompt_channels: int = 0
    #: names of the features in every output (``NetOutput.features``)
    returned_features: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.expert_heads = nn.ModuleDict()

    # --- to provide ------------------------------------------------------------------------------
    @property
    def divisor(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input_size(self, spatial: Sequence[int]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def role_modules(self) -> dict[str, list[nn.Module]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_head(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def feature_names(self) -> tuple[str, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- every expert at once ------------------------------------------------------------------
    def expert_logits(self, image: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits of every window under every expert: ``image [B, C, *S]``, ``rows LongTensor[E]``
        -> ``[B, E, K, *S]``. One pass per expert at the windows' own batch size (so memory does not
        grow with the number of experts); a network whose early layers ignore the expert overrides
        this to compute them once."""
        b = image.shape[0]
        return torch.stack([self(image, torch.full((b,), int(r), dtype=torch.long, device=image.device)).logits for r in rows], dim=1)

    # --- expert rows ----------------------------------------------------------------------------
    def cin_layers(self) -> dict[str, ConditionalInstanceNorm]:
        """Every conditional norm layer by module name, in module order (an adapter's row keys)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, ConditionalInstanceNorm)}

    @property
    def num_experts(self) -> int:
        layers = list(self.cin_layers().values())
        return layers[0].num_experts if layers else 1

    def expert_rows(self, row: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One expert's rows ``{layer: (gamma [1, C], beta [1, C])}`` (detached copies)."""
        self._check_row(row)
        out = {}
        for name, layer in self.cin_layers().items():
            gamma, beta = layer.table()
            out[name] = (gamma[row : row + 1].detach().clone(), beta[row : row + 1].detach().clone())
        return out

    def row_tables(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's full tables ``{layer: (gamma [E, C], beta [E, C])}`` (detached copies)."""
        return {n: tuple(t.detach().clone() for t in m.table()) for n, m in self.cin_layers().items()}

    def add_expert(self, rows: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[int, list[nn.Parameter]]:
        """Append one expert: a new row block in every CIN layer, each its own parameter.

        Returns:
            The new expert's row index and its new parameters (for an optimiser of their own).
        """
        layers = self.cin_layers()
        if set(rows) != set(layers):
            raise ValueError("the rows do not match this network's CIN layers (another architecture?)")
        index = self.num_experts
        params: list[nn.Parameter] = []
        for name, layer in layers.items():
            params += list(layer.add_experts(*rows[name]))
        return index, params

    def expert_row_parameters(self, row: int) -> list[nn.Parameter]:
        """An existing expert's rows as parameters of their own (row blocks are split, order kept),
        for continuing to train that expert alone."""
        self._check_row(row)
        params: list[nn.Parameter] = []
        for layer in self.cin_layers().values():
            params += list(layer.split_row(row))
        return params

    def remove_expert(self, row: int) -> None:
        """Drop one expert's rows (and head, and low-rank residuals); later experts move down by one row."""
        self._check_row(row)
        if self.num_experts == 1:
            raise ValueError("cannot remove the only expert of a network")
        for layer in self.cin_layers().values():
            gamma, beta = layer.table()
            keep = [i for i in range(gamma.shape[0]) if i != row]
            layer.gamma = nn.ParameterList([nn.Parameter(gamma[keep].detach().clone())])
            layer.beta = nn.ParameterList([nn.Parameter(beta[keep].detach().clone())])
        heads = {int(k): h for k, h in self.expert_heads.items() if int(k) != row}
        self.expert_heads = nn.ModuleDict({str(k - (k > row)): h for k, h in sorted(heads.items())})
        for site in self.low_rank_sites().values():
            kept = {int(k): a for k, a in site.adapters.items() if int(k) != row}
            site.adapters = nn.ModuleDict({str(k - (k > row)): a for k, a in sorted(kept.items())})

    def merge_row_blocks(self) -> None:
        """Fold every layer's row blocks into one table (a plain model file for saving)."""
        for layer in self.cin_layers().values():
            layer.merge_blocks()

    # --- per-expert heads --------------------------------------------------------------------------
    def add_expert_head(self, row: int, state: dict | None = None) -> list[nn.Parameter]:
        """Give ``row`` a private head: a copy of the shared head, or ``state`` loaded into one."""
        self._check_row(row)
        head = self.make_head()
        if state is not None:
            head.load_state_dict(state)
        ref = next(self.parameters())
        self.expert_heads[str(row)] = head.to(ref.device)
        return list(head.parameters())

    def expert_head_rows(self) -> list[int]:
        return sorted(int(k) for k in self.expert_heads)

    def expert_head_state(self, row: int) -> dict[str, torch.Tensor]:
        """The private head of ``row`` (empty if it uses the shared head)."""
        head = self.expert_heads[str(row)] if str(row) in self.expert_heads else None
        return {} if head is None else {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}

    def _heads(self, x: torch.Tensor, expert: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Replace the shared head's logits by each expert's private head where it has one."""
        for key, head in self.expert_heads.items():
            rows = expert == int(key)
            if rows.any():
                logits = torch.where(rows.view(-1, *([1] * (logits.ndim - 1))), head(x), logits)
        return logits

    # --- per-expert low-rank residuals ---------------------------------------------------------------
    def low_rank_sites(self, roles: Sequence[str] | None = None) -> dict[str, LowRankSite]:
        """The convolutions that can take per-expert low-rank residuals, by qualified name, within
        the shared ``roles`` (default: every role)."""
        modules = self.role_modules()
        wanted = list(modules) if roles is None else list(roles)
        unknown = [r for r in wanted if r not in modules]
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)}; this network has {', '.join(modules)}")
        inside = {id(m) for r in wanted for top in modules[r] for m in top.modules()}
        return {n: m for n, m in self.named_modules() if isinstance(m, LowRankSite) and id(m) in inside}

    def add_expert_low_rank(self, row: int, *, rank: int | None = None, sites: Sequence[str] | None = None, state: dict | None = None) -> list[nn.Parameter]:
        """Give ``row`` zero-initialised residuals of ``rank`` at ``sites`` (names from
        :meth:`low_rank_sites`), or the ones ``state`` (from :meth:`expert_low_rank_state`) holds."""
        self._check_row(row)
        every = self.low_rank_sites()
        names = list(state) if state is not None else list(sites or [])
        missing = [n for n in names if n not in every]
        if missing or not names:
            raise ValueError(f"no low-rank site(s) {', '.join(missing) or '(none given)'} in this network")
        ref = next(self.parameters())
        generator = torch.Generator().manual_seed(int(row))  # the same start for the same row, whatever ran before
        params = []
        for name in names:
            r = rank if state is None else int(state[name]["0.weight"].shape[0])
            params += every[name].add(int(row), r, generator=generator)
            adapter = every[name].adapters[str(row)].to(ref.device)
            if state is not None:
                adapter.load_state_dict(state[name])
        return params

    def expert_low_rank_state(self, row: int) -> dict[str, dict[str, torch.Tensor]]:
        """``{site: state}`` of ``row``'s low-rank residuals (empty if it has none)."""
        return {n: {k: v.detach().cpu().clone() for k, v in s.adapters[str(row)].state_dict().items()} for n, s in self.low_rank_sites().items() if str(row) in s.adapters}

    def expert_low_rank_rows(self) -> dict[int, list[str]]:
        """``{row: [site names]}`` of the experts that have low-rank residuals."""
        out: dict[int, list[str]] = {}
        for name, site in self.low_rank_sites().items():
            for row in site.rows():
                out.setdefault(row, []).append(name)
        return out

    # --- parameters by role --------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Every parameter by role: ``{role: {qualified name: parameter}}``.

        Roles: ``shared_encoder``, ``shared_decoder``, ``head``, any added module's role,
        ``expert_rows`` (all CIN tables), ``expert_heads`` and ``expert_low_rank``. Each parameter
        is in exactly one.
        """
        names = {id(p): n for n, p in self.named_parameters()}
        low_rank = [p for site in self.low_rank_sites().values() for p in site.parameters()]
        rows = {id(p) for layer in self.cin_layers().values() for p in layer.parameters()} | {id(p) for p in low_rank}
        groups: dict[str, dict[str, nn.Parameter]] = {}
        for role, modules in self.role_modules().items():
            groups[role] = {names[id(p)]: p for m in modules for p in m.parameters() if id(p) not in rows}
        groups["expert_rows"] = {names[id(p)]: p for layer in self.cin_layers().values() for p in layer.parameters()}
        groups["expert_heads"] = {names[id(p)]: p for p in self.expert_heads.parameters()}
        groups["expert_low_rank"] = {names[id(p)]: p for p in low_rank}
        return groups

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter that all experts share (every role but the rows and private heads)."""
        return [p for role, group in self.parameter_groups().items() if role not in ROW_ROLES for p in group.values()]

    def _check_row(self, row: int) -> None:
        if not 0 <= int(row) < self.num_experts:
            raise ValueError(f"row {row} is not an expert of this network (it has {self.num_experts})")

    @staticmethod
    def _check_image(image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 5:
            raise ValueError(f"image must be [B, C, D, H, W], got shape {tuple(image.shape)}")
        return image

    def _conditioning(self, image: torch.Tensor, expert, prompts) -> torch.Tensor:
        """Check the inputs of ``forward`` and return ``expert`` as ``LongTensor[B]``."""
        self._check_image(image)
        if prompts is not None and not self.prompt_channels:
            raise ValueError(f"{type(self).__name__} takes no prompts; use a promptable network")
        expert = torch.as_tensor(expert, device=image.device).long().reshape(-1)
        if expert.shape[0] == 1 and image.shape[0] > 1:
            expert = expert.expand(image.shape[0])
        return expert
