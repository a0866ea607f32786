#!/usr/bin/env python
"""Export a CTC speech recogniser (a DistilXLSR student fine-tuned by finetune_ctc.py, or any transformers wav2vec2 /
HuBERT CTC checkpoint) to ONNX, optionally int8-quantised for ONNX Runtime on a CPU.

    python export_onnx.py --model_name_or_path outputs/student-ctc --output_dir outputs/student-ctc-onnx --quantize int8

The output folder holds `model.onnx` (fp32; inputs `input_values` and, for layer-norm front ends, `attention_mask`,
both `(batch, samples)` with any batch size and length; output `logits`), `model_int8.onnx` with `--quantize int8`,
a plain `Wav2Vec2Config` (`config.json`, no remote code needed), the processor files (with `language_model/` when
the model has one) and `export_results.json` (the largest |ONNX - PyTorch| logit of each graph: the script ends by
checking the exported logits against PyTorch's). Transcribe with
`distilxlsr_pt.inference.load_recognizer(OUTPUT_DIR, backend="onnx", dtype="int8")`. How the export works:
`distilxlsr_pt/onnx_export.py`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from distilxlsr_pt.cli import add_trust_remote_code, argument_parser, run_script
from distilxlsr_pt.inference import ONNX_FILE_NAMES
from distilxlsr_pt.models import load_ctc_weights
from distilxlsr_pt.onnx_export import (
    export,
    exportable_model,
    max_logit_difference,
    quantize_int8,
    save_processor_files,
)
from distilxlsr_pt.results import write_results

logger = logging.getLogger("export_onnx")


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser(__doc__)
    parser.add_argument("--model_name_or_path", required=True, help="A CTC model folder or Hub id.")
    parser.add_argument("--output_dir", required=True, help="Where to write model.onnx and the processor files.")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="Also write model_int8.onnx.")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version.")
    add_trust_remote_code(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(message)s", level=logging.INFO)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    model = exportable_model(load_ctc_weights(args.model_name_or_path, trust_remote_code=args.trust_remote_code))
    with_attention_mask = model.config.feat_extract_norm == "layer"  # group norm ignores the mask (transformers)
    export(model, output_dir / ONNX_FILE_NAMES["fp32"], args.opset, with_attention_mask)
    model.config.save_pretrained(output_dir)
    save_processor_files(args.model_name_or_path, output_dir)
    if args.quantize == "int8":
        quantize_int8(output_dir / ONNX_FILE_NAMES["fp32"], output_dir / ONNX_FILE_NAMES["int8"])

    differences = {}
    for dtype, file_name in ONNX_FILE_NAMES.items():
        if (output_dir / file_name).is_file():
            differences[dtype] = max_logit_difference(model, output_dir, file_name)
            logger.info("Wrote %s: max |ONNX - PyTorch| logit %.2e", output_dir / file_name, differences[dtype])
    write_results(output_dir, "export", {"max_abs_logit_difference": differences})
    return differences


if __name__ == "__main__":
    run_script(main)
