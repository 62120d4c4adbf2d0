#!/usr/bin/env bash
# serve_prune.sh: the server's housekeeping: every --prune-interval it deletes unpaid purchases
# older than --unpaid-retention whose token can no longer download (with that token), tokens
# expired longer than --token-retention ago and download log rows older than --log-retention,
# and keeps purchases under which a priced blob was delivered (the ledger), young ones and ones
# whose token still works. Time is moved by back-dating rows with the sqlite3 CLI.
source "$(dirname "$0")/lib_serve.bash"
build_mkblob
make_cert
new_publisher alice
mkblob --key "$T/alice.key" -o "$T/priced.kvb" --seed 1 --title priced
mkblob --key "$T/alice.key" -o "$T/free.kvb" --seed 2 --title free
for o in --prune-interval --unpaid-retention --token-retention --log-retention; do
  "$KVPUBD" serve --help | grep -q -- "$o DURATION" || fail "serve --help documents $o"
done
start_server "$T/store" --prune-interval 1s --unpaid-retention 1h --token-retention 1h --log-retention 1d
expect 201 "PUT" "/v1/blobs?price=5" -H "Authorization: Bearer $CRED" --data-binary @"$T/priced.kvb"; P=$(json .id)
expect 201 "PUT" "/v1/blobs" -H "Authorization: Bearer $CRED" --data-binary @"$T/free.kvb"; F=$(json .id)

buy() {  # BLOB -> PID, TOK
  expect 201 POST /v1/purchases -H 'Content-Type: application/json' --data-binary "{\"blob\": \"$1\"}"
  PID=$(json .purchase); TOK=$(json .token)
}
buy "$P"; A=$PID                          # paid: a priced blob delivered under it
expect 200 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK"
buy "$P"; B=$PID; TOK_B=$TOK              # unpaid, old, token expired: pruned
buy "$P"; C=$PID                          # unpaid but young: kept
buy "$P"; D=$PID                          # unpaid and old, but its token still works: kept
buy "$F"; E=$PID                          # a free blob, old, token expired: pruned
buy "$P"; G=$PID; TOK_G=$TOK              # young, token expired 10 min ago: both kept
expect 200 GET "/v1/blobs/$F"
expect 200 GET "/v1/blobs/$F"
wait_log "path=\"/v1/blobs/$P\".*status=200" || fail "the paid download completed"
for _ in $(seq 40); do
  [ "$(sqlite3 "$T/store/index.db" "select count(*) from download_log")" = 3 ] && break; sleep 0.05
done
db() { sqlite3 -cmd ".timeout 5000" "$T/store/index.db" "$@"; }
[ "$(db "select delivered > 0 from purchases where id = $A")" = 1 ] || fail "a delivery is counted on its purchase"
now=$(date +%s)
db "begin immediate;
    update purchases set created = created - 30 * 86400 where id = $A;
    update access_tokens set expires = $now - 7200 where purchase_id = $A;
    update purchases set created = created - 7200 where id in ($B, $D, $E);
    update access_tokens set expires = $now - 600 where purchase_id in ($B, $E, $G);
    update download_log set at = at - 2 * 86400 where id = (select min(id) from download_log where blob_id = '$F');
    commit;"  # in one transaction: a pass between two of these would split the counts

for _ in $(seq 60); do
  [ "$(db "select count(*) from purchases")" = 4 ] && break; sleep 0.1
done
[ "$(db "select group_concat(id) from (select id from purchases order by id)")" = "$A,$C,$D,$G" ] \
  && ok "unpaid old purchases pruned; paid, young and still usable ones kept" \
  || fail "purchases left: $(db "select group_concat(id) from purchases")"
wait_log "event=prune purchases=2 tokens=3 log_rows=1" || fail "the pass is logged: $(grep event=prune "$T/server.log")"
[ "$(db "select group_concat(purchase_id) from (select purchase_id from access_tokens order by purchase_id)")" \
  = "$C,$D,$G" ] && ok "tokens expired over an hour ago (and the pruned purchases') deleted" \
  || fail "tokens left: $(db "select group_concat(purchase_id) from access_tokens")"
[ "$(db "select count(*) from download_log")" = 2 ] && ok "download log rows older than a day deleted" \
  || fail "log rows left: $(db "select count(*) from download_log")"
expect 403 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK_G"
[ "$(json .error)" = token_expired ] || fail "a recently expired token still says token_expired"
expect 401 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK_B"
[ "$(json .error)" = invalid_token ] || fail "a pruned token is unknown"
stop_server || fail "clean stop"

# --prune-interval 0: nothing is ever deleted
db "update purchases set created = created - 30 * 86400"
start_server "$T/store" --prune-interval 0 --unpaid-retention 1s
sleep 1.2
[ "$(db "select count(*) from purchases")" = 4 ] || fail "--prune-interval 0 prunes nothing"
stop_server || fail "clean stop"
done_tests
