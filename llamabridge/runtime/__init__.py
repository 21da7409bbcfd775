"""What runs the models, apart from any protocol: the TOML config and routing, finding and
downloading model files, and the model pool the server and the in-process CLI commands share."""
