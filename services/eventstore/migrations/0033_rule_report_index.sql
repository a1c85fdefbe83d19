-- The rule health report reads one org's detections of a period (issue 33's console bench: at
-- 1,000,000 tickets it read every detection row of every org, 1.5 s for one org's 90 days).
CREATE INDEX ticket_detections_org_detected ON ticket_detections (oid, detected_at);
