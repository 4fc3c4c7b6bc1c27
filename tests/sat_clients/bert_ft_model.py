from sat_accel.model.official.bert_model import BertModel
from sat_accel.model.mixins import MLPHeadMixin


class ClassificationModel(BertModel):
    def __init__(self, args, transformer=None, parallel_output=True, layernorm_epsilon=1e-12, **kwargs):
        super().__init__(args, transformer=transformer, parallel_output=parallel_output,
                         layernorm_epsilon=layernorm_epsilon, **kwargs)
        # the MLM head goes, a one-logit classifier comes
        self.del_mixin('bert-final')
        self.add_mixin('classification_head', MLPHeadMixin(args.hidden_size, 2048, 1))

    def disable_untrainable_params(self):
        self.transformer.word_embeddings.requires_grad_(False)

    @classmethod
    def add_model_specific_args(cls, parser):
        parser.add_argument_group('BERT-finetune', 'BERT finetune Configurations')
        return super().add_model_specific_args(parser)
