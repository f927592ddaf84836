"""The named transcode presets a task may ask for: `"post_process": {"transcode": NAME}`."""

from __future__ import annotations

from dataclasses import dataclass

from progress_server.processing.media import MediaInfo


@dataclass(frozen=True)
class Preset:
    name: str
    extension: str
    description: str
    # ffmpeg output options, placed between the input and the output file.
    args: tuple[str, ...]
    needs_audio: bool = False

    def problem_with(self, media: MediaInfo) -> str | None:
        """Why this preset cannot make anything of `media`, or None."""
        if self.needs_audio and not media.has_audio:
            return f"the '{self.name}' preset needs an audio stream and the file has none"
        return None


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "mp4",
            "mp4",
            "H.264 video and AAC audio in MP4, playable nearly everywhere",
            (
                *("-map", "0:v:0?", "-map", "0:a:0?"),
                # H.264 in yuv420p needs even dimensions; odd ones are trimmed by a pixel.
                *("-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-pix_fmt", "yuv420p"),
                *("-c:v", "libx264", "-preset", "veryfast", "-crf", "23"),
                *("-c:a", "aac", "-b:a", "160k"),
                *("-movflags", "+faststart"),
            ),
        ),
        Preset(
            "mp3",
            "mp3",
            "the audio only, as MP3 (VBR, about 190 kbit/s)",
            ("-map", "0:a:0", "-vn", "-c:a", "libmp3lame", "-q:a", "2"),
            needs_audio=True,
        ),
        Preset(
            "remux-mp4",
            "mp4",
            "the same video and audio, copied unchanged into MP4 (fast, no quality loss)",
            ("-map", "0:v?", "-map", "0:a?", "-c", "copy", "-movflags", "+faststart"),
        ),
    )
}
