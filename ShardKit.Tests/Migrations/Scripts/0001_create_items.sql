create table items (id bigint not null);
insert into items values (1);
