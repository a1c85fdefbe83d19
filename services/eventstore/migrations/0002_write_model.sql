-- Write-side lookups, maintained by the command handler in the same transaction as the events.

-- Ticket numbers per org: the row lock serialises allocation; numbers are never reused.
CREATE TABLE ticket_numbers (
    oid          text PRIMARY KEY,
    last_number  integer NOT NULL CHECK (last_number >= 0)
);

-- (oid, number) -> ticket id, for commands that name a ticket by its number.
CREATE TABLE ticket_index (
    oid            text    NOT NULL,
    ticket_number  integer NOT NULL,
    ticket_id      uuid    NOT NULL UNIQUE,
    PRIMARY KEY (oid, ticket_number)
);

-- Each detection id belongs to at most one ticket of its org: dedup and the 409 on relinking.
CREATE TABLE detection_index (
    oid           text NOT NULL,
    detection_id  text NOT NULL,
    ticket_id     uuid NOT NULL,
    PRIMARY KEY (oid, detection_id)
);
