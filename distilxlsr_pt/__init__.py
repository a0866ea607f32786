"""DistilXLSR-PT's library: the code the scripts share, one module per job.

The scripts at the top of the checkout (`train_distill.py`, `finetune_ctc.py`, ...) are entry points only; what more
than one of them needs lives here. The two model files beside them (`configuration_distilxlsr.py`,
`modeling_distilxlsr.py`) are the remote-code pair that `save_pretrained` copies next to a model's weights: this package
imports them, never the other way round.

- `audio`: decoding any audio to 16 kHz mono (`SAMPLING_RATE`, `load_audio`)
- `text`: transcript normalisation and the character vocabulary
- `data`: one description of a dataset split (`DatasetSplit`) and its loading
- `models`: loading CTC models, feature extractors and teachers without running a folder's code unasked
- `decoding`: conv output lengths, logits without padding, greedy and n-gram LM decoding, WER/CER
- `evaluation`: scoring a recogniser on corpora (tables, model-card entries)
- `inference`: audio in, text out, with PyTorch or ONNX Runtime (imports neither accelerate, datasets nor the Trainer)
- `onnx_export`: turning a CTC model into ONNX graphs (fp32, int8)
- `lm`: building a recogniser's n-gram LM decoder (`ngram`: the Kneser-Ney estimator)
- `distillation`: the teacher, the loss, the data pipeline and the loop state of layer-wise distillation
- `ctc`: CTC fine-tuning pieces for the Trainer (collator, trainer, data preparation)
- `cards`: the one model/dataset card writer, and whether a model or corpus is a stand-in
- `results`: the one results writer (`<output_dir>/<job>_results.json`)
- `checks`, `cli`: start-of-run checks and the shared command-line vocabulary
- `memory`: keeping a long run's memory flat under glibc's malloc, and measuring it
- `s3prl`: conversion to and from s3prl's distiller checkpoints
- `stand_ins`, `demo_corpus`: the stand-in teachers and the synthetic demo corpus
"""
