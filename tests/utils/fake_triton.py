"""A stand-in Triton gRPC server for gateway tests that need the real ``tritonclient`` channel (serialisation,
deadlines) but not the model: ``python -m tests.utils.fake_triton PORT SECONDS_OF_TEXT``.

Every ``ModelInfer`` answers like the Whisper model: as many Chinese segments as the audio has seconds
(two characters a second), with a JSON SEGMENTS tensor from ``whisper_triton.protocol``. It prints
``ready`` once it listens.
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import serialize_byte_tensor

from whisper_triton import protocol

PHRASE = "软件很好，这个软件的质量"  # OpenCC s2twp changes several of these characters


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelInfer(self, request, context):
        samples = len(request.raw_input_contents[0]) // 4  # AUDIO, FP32
        seconds = samples / protocol.SAMPLE_RATE
        segments = [protocol.Segment(i, float(i), i + 1.0, PHRASE[i % 6:i % 6 + 2], tokens=(i % 50,))
                    for i in range(int(seconds))]
        arrays = protocol.result_arrays("".join(s.text for s in segments), segments, "zh", seconds)
        response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        for tensor in protocol.OUTPUTS:
            array = arrays[tensor.name]
            response.outputs.add(name=tensor.name, datatype=tensor.triton_dtype, shape=list(array.shape))
            raw = serialize_byte_tensor(array).item() if tensor.triton_dtype == "BYTES" else array.tobytes()
            response.raw_output_contents.append(raw)
        return response


def main() -> None:
    port = int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
