"""Media sources: yt-dlp runs in a worker process whose JSON lines drive a task's progress."""
