"""One optimiser step of the trainer's loss on a tiny pivot: whole in one process, or sharded with FSDP2
(`fully_shard`, gloo on CPU) over the processes torchrun starts. Writes the updated weights (torch.save).

    python fsdp2_step.py PIVOT TARGETS OUT plain
    torchrun --nproc_per_node 2 fsdp2_step.py PIVOT TARGETS OUT fsdp [shard-head]
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from fusechat.models.load import load_model
from fusechat.store.format import TopKStore
from fusechat.train.data import FusionCollator, TargetsDataset
from fusechat.train.trainer import LossConfig, step_loss

ROWS = 8


def main() -> None:
    pivot, targets, out, mode = sys.argv[1:5]
    shard_head = "shard-head" in sys.argv[5:]
    torch.manual_seed(0)
    dataset = TargetsDataset(TopKStore(targets))
    examples = [dataset[i] for i in range(ROWS)]
    normalizer = sum(len(e["positions"]) for e in examples)  # the whole step's supervised positions
    model = load_model(pivot)
    world, rank = 1, 0
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        world, rank = dist.get_world_size(), dist.get_rank()
        for layer in model.model.layers:
            fully_shard(layer)
        if shard_head:  # the head in its own FSDP group: resharded after its forward, whole only inside it
            fully_shard(model.lm_head)
        fully_shard(model)
    batch = FusionCollator(pad_id=0)(examples[rank::world])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    parts = step_loss(model, batch, LossConfig(lam=0.5), normalizer)
    (parts.loss * world).backward()  # FSDP averages gradients over processes; the normaliser counts them all
    opt.step()
    state = {}
    for k, v in model.state_dict().items():
        full = v.full_tensor() if hasattr(v, "full_tensor") else v
        state[k] = full.detach().clone()
    if rank == 0:
        torch.save(state, out)
    if mode == "fsdp":
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
