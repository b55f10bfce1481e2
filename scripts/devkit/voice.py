"""Real voice notes for tests and benchmarks: a tone encoded by FFmpeg's encoders (PyAV,
a development dependency) in each container the apps upload, as a phone or a browser
would: AAC in M4A, MP3, PCM WAV, Opus in WebM (``live``: no duration and unknown sizes,
as MediaRecorder writes) and Opus in Ogg."""

from __future__ import annotations

import io

#: extension -> (content type, PyAV format, codec, sample rate)
FORMATS = {
    "m4a": ("audio/mp4", "ipod", "aac", 16000),
    "mp3": ("audio/mpeg", "mp3", "libmp3lame", 16000),
    "wav": ("audio/wav", "wav", "pcm_s16le", 16000),
    "webm": ("audio/webm", "webm", "libopus", 48000),
    "ogg": ("audio/ogg", "ogg", "libopus", 48000),
}


def voice_note(extension: str, seconds: float = 2.0, *, live: bool = False, hz: float = 440.0) -> bytes:
    """``seconds`` of a tone at ``hz`` in the container of ``extension`` (see FORMATS)."""
    import av
    import numpy as np

    _content_type, fmt, codec, rate = FORMATS[extension]
    out_buffer = io.BytesIO()
    with av.open(out_buffer, "w", format=fmt, options={"live": "1"} if live else {}) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        count = int(rate * seconds)
        wave = np.sin(2 * np.pi * hz * np.arange(count) / rate) * 0.3
        size = stream.codec_context.frame_size or 1024
        sample_format = stream.codec_context.format.name
        for start in range(0, count, size):
            chunk = wave[start:start + size]
            if sample_format.startswith("flt"):
                samples = chunk.astype("float32")
            elif sample_format.startswith("s32"):
                samples = (chunk * (2**31 - 1)).astype("int32")
            else:
                samples = (chunk * 32767).astype("int16")
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format=sample_format, layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return out_buffer.getvalue()


def content_type(extension: str) -> str:
    return FORMATS[extension][0]
