-- What an account may do in the console: `admin` everything, `monitor` see every page and
-- change nothing. The accounts made before roles existed could change everything, so they
-- stay administrators.
ALTER TABLE accounts ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'monitor'));
