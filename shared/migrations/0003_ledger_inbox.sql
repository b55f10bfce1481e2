-- Credits ledger invariants beyond 0001: each kind of entry has one sign, only a
-- clawback records a shortfall, and reservation entries point at their reservation.
-- Together with UNIQUE (source, ref) (reserve/refund refs are '<reservation id>:reserve'
-- and '<reservation id>:refund') the database itself refuses a second refund of one
-- reservation, whatever the code does.
-- depends: 0001_initial

ALTER TABLE credit_ledger
    ADD CONSTRAINT credit_ledger_amount_sign CHECK (
        CASE kind
            WHEN 'grant'    THEN amount > 0
            WHEN 'refund'   THEN amount > 0
            WHEN 'reserve'  THEN amount < 0
            WHEN 'clawback' THEN amount <= 0          -- 0 when the balance was already empty
            ELSE true                                 -- 'adjust': manual corrections, either sign
        END),
    ADD CONSTRAINT credit_ledger_shortfall_kind CHECK (shortfall = 0 OR kind = 'clawback'),
    ADD CONSTRAINT credit_ledger_reservation_kind CHECK (
        (kind IN ('reserve', 'refund')) = (reservation_id IS NOT NULL));

CREATE INDEX credit_ledger_reservation_idx ON credit_ledger (reservation_id)
    WHERE reservation_id IS NOT NULL;
