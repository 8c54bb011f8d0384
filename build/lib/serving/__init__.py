"""RadAssist model serving: TensorFlow Serving's gRPC and REST APIs over a TF Serving model base path."""
