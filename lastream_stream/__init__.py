"""LaStream: a Kafka-native autoscaler for stream-processing operators."""

import warnings

# torch_geometric calls the deprecated torch.jit.script when it is imported; harmless here,
# and otherwise the first thing every `lastream` command prints.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
