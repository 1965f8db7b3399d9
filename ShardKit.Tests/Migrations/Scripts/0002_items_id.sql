-- shardkit:no-transaction
create index concurrently if not exists items_id on items (id);
