-- Media sources (#13). `source` is how the URL is fetched: 'http' as a file, 'media'
-- through yt-dlp. A playlist is a parent task whose `entries` (a JSON array of task ids,
-- in playlist order) are tasks of their own, each naming its `parent_id` and its 1-based
-- `playlist_index`.
ALTER TABLE tasks ADD COLUMN source TEXT NOT NULL DEFAULT 'http';
ALTER TABLE tasks ADD COLUMN parent_id TEXT;
ALTER TABLE tasks ADD COLUMN playlist_index INTEGER;
ALTER TABLE tasks ADD COLUMN entries TEXT;
CREATE INDEX tasks_parent ON tasks(parent_id) WHERE parent_id IS NOT NULL;
