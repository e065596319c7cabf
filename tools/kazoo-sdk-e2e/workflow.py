"""The groups workflow of an unmodified third-party Kazoo client (kazoo-sdk, pinned in
requirements.txt), against a running kz-groups: log in with an API key and with a user's
credentials through the client's own handshake, then list, create, fetch, update and delete.
Usage: workflow.py BASE_URL ACCOUNT_JSON USERNAME PASSWORD ACCOUNT_NAME"""
import json
import sys

import kazoo

base_url, account_file, username, password, account_name = sys.argv[1:6]
account = json.load(open(account_file))
account_id = account["account_id"]

clients = {
    "api_key": kazoo.Client(api_key=account["api_key"], base_url=base_url),
    "user_auth": kazoo.Client(username=username, password=password,
                              account_name=account_name, base_url=base_url),
}
for how, client in clients.items():
    client.authenticate()
    assert client.auth_token.count(".") == 2, client.auth_token
    before = {g["id"] for g in client.get_groups(account_id)["data"]}
    created = client.create_group(account_id, {"name": "Sales " + how, "endpoints": {}})["data"]
    group_id = created["id"]
    assert created["name"] == "Sales " + how and created["music_on_hold"] == {}, created
    assert client.get_group(account_id, group_id)["data"] == created
    updated = client.update_group(account_id, group_id, {"name": "Support " + how, "endpoints": {}})["data"]
    assert updated["name"] == "Support " + how, updated
    listed = {g["id"]: g["name"] for g in client.get_groups(account_id)["data"]}
    assert listed.get(group_id) == "Support " + how, listed
    deleted = client.delete_group(account_id, group_id)["data"]
    assert deleted["_read_only"] == {"deleted": True}, deleted
    after = {g["id"] for g in client.get_groups(account_id)["data"]}
    assert after == before, (before, after)
    print("kazoo-sdk %s workflow: ok" % how)
