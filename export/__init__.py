"""Export (imported as ``rkd_edge.export``): ONNX models, INT8 Q/DQ calibration, TensorRT engines and
deployable bundles with a hashed manifest. See DESIGN.md section 5."""
