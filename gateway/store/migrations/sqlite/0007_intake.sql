-- Records taken in through a platform adapter remember it (`adapter:<platform>`), so that the
-- relay never sends a platform its own rows back (like `arrived_from` for envelopes).
ALTER TABLE records ADD COLUMN intake TEXT;
