-- A CA (PEM) to trust for the syslog collector's TLS certificate, besides the public roots.
ALTER TABLE audit_settings ADD COLUMN syslog_ca_pem text CHECK (char_length(syslog_ca_pem) <= 20000);
