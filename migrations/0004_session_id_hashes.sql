-- Session ids were kept as the cookie carries them, so whoever could read the database
-- could log in. Only their SHA-256 (hex) is kept now; SQLite cannot hash the old ones, so
-- those sessions end and their users log in again.
DELETE FROM sessions;
ALTER TABLE sessions RENAME COLUMN id TO id_sha256;
