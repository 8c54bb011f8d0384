"""Model monitoring: logged traffic -> per-image features -> drift against the model's training images."""
