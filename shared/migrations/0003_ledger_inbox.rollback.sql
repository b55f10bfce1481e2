DROP INDEX IF EXISTS credit_ledger_reservation_idx;
ALTER TABLE credit_ledger
    DROP CONSTRAINT IF EXISTS credit_ledger_amount_sign,
    DROP CONSTRAINT IF EXISTS credit_ledger_shortfall_kind,
    DROP CONSTRAINT IF EXISTS credit_ledger_reservation_kind;
