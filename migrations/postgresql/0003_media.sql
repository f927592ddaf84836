-- PostgreSQL twin of ../0003_media.sql (#13). `source` is how the URL is fetched: 'http' as
-- a file, 'media' through yt-dlp. A playlist is a parent task whose `entries` (a JSON
-- array of task ids, in playlist order) are tasks of their own, each naming its
-- `parent_id` and its 1-based `playlist_index`.
ALTER TABLE tasks ADD COLUMN source text NOT NULL DEFAULT 'http';
ALTER TABLE tasks ADD COLUMN parent_id text;
ALTER TABLE tasks ADD COLUMN playlist_index integer;
ALTER TABLE tasks ADD COLUMN entries json;
CREATE INDEX tasks_parent ON tasks(parent_id) WHERE parent_id IS NOT NULL;
