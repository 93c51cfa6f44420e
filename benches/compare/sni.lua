-- wrk script for the TLS rows: the URL's host name is the TLS SNI (and the
-- Host header), but every connection goes to 127.0.0.1 (the name need not
-- resolve, no /etc/hosts edit). wrk sets one SNI per run: it cannot vary it
-- per connection.
--
--   wrk -s benches/compare/sni.lua https://www.example.cn:18443/ -H 'Connection: close'
wrk.resolve = function(host, service)
    wrk.addrs = wrk.lookup("127.0.0.1", service)
end
