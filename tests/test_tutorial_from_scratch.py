"""SAT's tutorial, first path: pretrain from scratch by giving training_main a BertModel subclass, with
--split 95,5,5, save, then reload with AutoModel.from_pretrained and predict (must learn the task)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import tiny_task
from sat_accel import get_args, training_main
from sat_accel.model import AutoModel, BertModel, MLPHeadMixin


class MarkerClassifier(BertModel):
    """BertModel whose MLM head is replaced by a classification head on [CLS] (SAT's idiom)."""

    def __init__(self, args, transformer=None, **kwargs):
        super().__init__(args, transformer=transformer, **kwargs)
        self.del_mixin("bert-final")
        self.add_mixin("classification_head", MLPHeadMixin(args.hidden_size, 64, 1))


def cls_logit(model, ids: torch.Tensor) -> torch.Tensor:
    logits, *_ = model(input_ids=ids, token_type_ids=torch.zeros_like(ids))
    return logits[:, 0, 0].float()


def forward_step(data_iterator, model, args, timers):
    batch = next(data_iterator)
    logit = cls_logit(model, batch["input_ids"])
    loss = F.binary_cross_entropy_with_logits(logit, batch["label"].float())
    return loss, {"acc": ((logit > 0).long() == batch["label"]).float().mean()}


def create_dataset(path, args):
    return tiny_task.MarkerDataset(int(path.split(":")[1]), seed=0)


def test_bert_subclass_pretrained_from_scratch_learns_and_reloads(tmp_path):
    torch.set_num_threads(1)
    args = get_args(["--train-data", "marker:4000", "--split", "95,5,5", "--batch-size", "16", "--lr", "1e-3",
                     "--train-iters", "300", "--warmup", "0", "--eval-interval", "300", "--eval-iters", "4",
                     "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
                     "--vocab-size", str(tiny_task.MARKER_TASK["vocab"]), "--max-sequence-length", "16",
                     "--save", str(tmp_path / "ckpt"), "--experiment-name", "scratch", "--no-progress",
                     "--log-interval", "50", "--num-workers", "0", "--seed", "1"])
    training_main(args, model_cls=MarkerClassifier, forward_step_function=forward_step,
                  create_dataset_function=create_dataset)
    (run_dir,) = (tmp_path / "ckpt").glob("scratch*")
    model, _ = AutoModel.from_pretrained(str(run_dir))
    assert type(model) is MarkerClassifier and not model.training
    ids, labels = tiny_task.marker_examples(512, seed=99)  # unseen examples
    with torch.no_grad():
        accuracy = ((cls_logit(model, ids) > 0).long() == labels).float().mean().item()
    print(f"from-scratch tutorial flow: accuracy {accuracy:.3f} on 512 new examples")
    assert accuracy >= 0.9
