import os
import sys
import math
import random
import torch
import argparse
import numpy as np

from sat_accel import mpu, get_args, get_tokenizer
from sat_accel.model.base_model import BaseModel
from sat_accel.training.deepspeed_training import training_main
from sat_accel.data_utils import BinaryDataset
from torch.utils.data import TensorDataset, DataLoader


def get_masks_and_position_ids(data, loss_mask=None, attention_mask=None, args=None):
    batch_size, seq_length = data.size()
    if attention_mask is None:  # causal: [b, 1, s, s]
        attention_mask = torch.ones((batch_size, seq_length, seq_length), device=data.device)
        attention_mask.tril_()
        attention_mask.unsqueeze_(1)
    if loss_mask is None:
        loss_mask = torch.ones(data.size(), dtype=data.dtype, device=data.device)
    position_ids = torch.arange(seq_length, dtype=torch.long, device=data.device)
    position_ids = position_ids.unsqueeze(0).expand_as(data)
    return attention_mask, loss_mask, position_ids


def get_batch(data_iterator, args, timers):
    keys = ['text', 'loss_mask']
    timers('data loader').start()
    data = next(data_iterator) if data_iterator is not None else None
    timers('data loader').stop()
    data_b = mpu.broadcast_data(keys, data, torch.int64)
    tokens_ = data_b['text'].long()
    loss_mask = data_b['loss_mask'].float()
    labels = tokens_[:, 1:].contiguous()
    loss_mask = loss_mask[:, 1:].contiguous()
    tokens = tokens_[:, :-1].contiguous()
    attention_mask, loss_mask, position_ids = get_masks_and_position_ids(
        tokens, loss_mask=loss_mask, attention_mask=None, args=args)
    if args.fp16:
        attention_mask = attention_mask.half()
    return tokens, labels, loss_mask, attention_mask, position_ids


def forward_step(data_iterator, model, args, timers):
    timers('batch generator').start()
    tokens, labels, loss_mask, attention_mask, position_ids = get_batch(data_iterator, args, timers)
    timers('batch generator').stop()
    logits, *mems = model(tokens, position_ids, attention_mask)
    losses = mpu.vocab_parallel_cross_entropy(logits.contiguous().float(), labels)
    loss_mask = loss_mask.view(-1)
    loss = torch.sum(losses.view(-1) * loss_mask) / loss_mask.sum()
    return loss, {}


class FakeDataset(TensorDataset):
    def __init__(self, process_fn=None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_fn = process_fn

    def __getitem__(self, idx):
        return self.process_fn(super().__getitem__(idx))


def create_dataset_function(path, args):
    rows = torch.randint(0, 100, (100000, 5))

    def process_fn(row):
        return {'text': row[0], 'loss_mask': np.array([1] * len(row[0]))}
    return FakeDataset(process_fn, rows)


if __name__ == '__main__':
    os.environ['MASTER_ADDR'] = 'localhost'
    os.environ['MASTER_PORT'] = '12355'
    os.environ['RANK'] = '0'
    os.environ['WORLD_SIZE'] = '1'
    os.environ['LOCAL_RANK'] = '0'

    py_parser = argparse.ArgumentParser(add_help=False)
    py_parser.add_argument('--new_hyperparam', type=str, default=None)
    known, args_list = py_parser.parse_known_args()
    args = get_args(args_list + '--train-data fake --num-workers 0'.split())
    args = argparse.Namespace(**vars(args), **vars(known))

    training_main(args, model_cls=BaseModel, forward_step_function=forward_step,
                  create_dataset_function=create_dataset_function)
