-- One request per connection: the server closes after each response, so every request pays a
-- TCP connect (and with HTTPS a full TLS handshake).
wrk.headers["Connection"] = "close"
