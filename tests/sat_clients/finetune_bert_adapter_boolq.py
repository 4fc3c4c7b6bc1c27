import os

import torch
import argparse
import numpy as np

from sat_accel import mpu, get_args, get_tokenizer
from sat_accel.training.deepspeed_training import training_main
from sat_accel.model.official.bert_model import BertModel
from sat_accel.model.mixins import MLPHeadMixin, AdapterMixin
from sat_accel.model.base_model import BaseMixin
import torch.nn as nn


class AdapterModel(BertModel):
    def __init__(self, args, transformer=None, parallel_output=True, layernorm_epsilon=1e-12, **kwargs):
        super().__init__(args, transformer=transformer, parallel_output=parallel_output,
                         layernorm_epsilon=layernorm_epsilon, **kwargs)
        self.del_mixin('bert-final')
        self.del_mixin('bert-forward')
        self.add_mixin('classification_head', MLPHeadMixin(args.hidden_size, 2048, 1))
        self.add_mixin('adapter', AdapterMixin(args.num_layers, args.hidden_size, args.adapter_hidden))

    def disable_untrainable_params(self):
        # only layernorms, adapters and the head train
        enable = ['layernorm', 'adapter', 'classification_head']
        for n, p in self.named_parameters():
            if not any(e in n.lower() for e in enable):
                p.requires_grad_(False)

    @classmethod
    def add_model_specific_args(cls, parser):
        group = parser.add_argument_group('BERT-finetune', 'BERT finetune Configurations')
        group.add_argument('--adapter_hidden', type=int, default=64)
        return super().add_model_specific_args(parser)


def get_batch(data_iterator, args, timers):
    keys = ['input_ids', 'position_ids', 'token_type_ids', 'attention_mask', 'label']
    timers('data loader').start()
    data = next(data_iterator) if data_iterator is not None else None
    timers('data loader').stop()
    data_b = mpu.broadcast_data(keys, data, torch.int64)
    tokens = data_b['input_ids'].long()
    labels = data_b['label'].long()
    position_ids = data_b['position_ids'].long()
    token_type_ids = data_b['token_type_ids'].long()
    attention_mask = data_b['attention_mask'][:, None, None, :].float()
    if args.fp16:
        attention_mask = attention_mask.half()
    return tokens, labels, attention_mask, position_ids, token_type_ids, (tokens != 1)


def forward_step(data_iterator, model, args, timers):
    timers('batch generator').start()
    tokens, labels, attention_mask, position_ids, token_type_ids, loss_mask = get_batch(data_iterator, args, timers)
    timers('batch generator').stop()
    logits, *mems = model(input_ids=tokens, position_ids=position_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids)
    pred = logits.contiguous().float().squeeze(-1)[..., 0]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(pred, labels.float())
    acc = ((pred > 0.).long() == labels).sum() / labels.numel()
    return loss, {'acc': acc}


def _encode(text, text_pair):
    tokenizer = get_tokenizer()
    encoded = tokenizer(text, text_pair, max_length=args.sample_length, padding='max_length',
                        truncation='only_first')
    position_ids = torch.arange(len(encoded['input_ids']))
    return dict(input_ids=encoded['input_ids'], position_ids=position_ids.numpy(),
                token_type_ids=encoded['token_type_ids'], attention_mask=encoded['attention_mask'])


from sat_accel.data_utils import load_hf_dataset


def create_dataset_function(path, args):
    def process_fn(row):
        pack, label = _encode(row['passage'], row['question']), int(row['label'])
        return {
            'input_ids': np.array(pack['input_ids'], dtype=np.int64),
            'position_ids': np.array(pack['position_ids'], dtype=np.int64),
            'attention_mask': np.array(pack['attention_mask'], dtype=np.int64),
            'token_type_ids': np.array(pack['token_type_ids'], dtype=np.int64),
            'label': label,
        }
    return load_hf_dataset(path, process_fn, columns=["input_ids", "position_ids", "token_type_ids",
                                                      "attention_mask", "label"],
                           cache_dir=args.data_root, offline=False, transformer_name="boolq_transformer")


if __name__ == '__main__':
    py_parser = argparse.ArgumentParser(add_help=False)
    py_parser.add_argument('--sample_length', type=int, default=512 - 16)
    py_parser.add_argument('--old_checkpoint', action="store_true")
    py_parser.add_argument('--data_root', type=str)
    py_parser.add_argument('--md_type', type=str)
    py_parser = AdapterModel.add_model_specific_args(py_parser)
    known, args_list = py_parser.parse_known_args()
    args = get_args(args_list)
    args = argparse.Namespace(**vars(args), **vars(known))

    model, args = AdapterModel.from_pretrained(args, args.md_type)
    get_tokenizer(args)
    training_main(args, model_cls=model, forward_step_function=forward_step,
                  create_dataset_function=create_dataset_function)
