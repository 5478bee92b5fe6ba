"""Build the Seg-LSTM backbone (ViL-S) as a timm feature extractor and print its stage outputs.

python examples/features.py
"""

import timm
import torch

import vil_seg  # noqa: F401  (registers the ViL models with timm)


def main() -> None:
    model = timm.create_model("vil_small", features_only=True, img_size=512).eval()
    print(f"vil_small: {sum(p.numel() for p in model.parameters()):,} parameters")
    print(f"stage ends (out_indices): {model.feature_info.out_indices}")
    image = torch.randn(1, 3, 256, 384)  # any size divisible by 16, square or not
    with torch.inference_mode():
        features = model(image)
    for index, feature in zip(model.feature_info.out_indices, features, strict=True):
        print(f"block {index:2d}: {tuple(feature.shape)}  (B, C, H/16, W/16)")


if __name__ == "__main__":
    main()
