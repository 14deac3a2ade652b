//! Accounts, users, `/auth/me`, and the wall between tenants.

use reqwest::Method;
use serde_json::json;

use crate::on_both_backends;

on_both_backends! {
    async fn me_names_the_user_with_email_at_the_top_level_plus_account_and_key(srv) {
        let acme = srv.account("Acme").await;
        let me = srv.get_ok("/api/v1/auth/me", &acme.key).await;
        assert_eq!(me["email"], "owner@acme.test");
        assert_eq!(me["id"], acme.user_id.as_str());
        assert_eq!(me["username"], "owner@acme.test");
        assert_eq!(me["first_name"], "Olive");
        assert_eq!(me["account"]["id"], acme.id.as_str());
        assert_eq!(me["account"]["plan"], "free");
        assert_eq!(me["key"]["scope"], "admin");
        assert!(me["key"].get("key").is_none());
    }

    async fn credentials_are_accepted_as_bearer_x_api_key_and_x_auth_token(srv) {
        let acme = srv.account("Acme").await;
        for header in ["x-api-key", "x-auth-token"] {
            let r = srv.client.get(format!("{}/api/v1/auth/me", srv.base)).header(header, &acme.key).send().await.expect("send");
            assert_eq!(r.status(), 200, "{header}");
        }
        let none = srv.client.get(format!("{}/api/v1/auth/me", srv.base)).send().await.expect("send");
        assert_eq!(none.status(), 401);
        let basic = srv.client.get(format!("{}/api/v1/auth/me", srv.base)).basic_auth("u", Some("p")).send().await.expect("send");
        assert_eq!(basic.status(), 401);
    }

    async fn an_operator_creates_lists_replans_disables_and_deletes_accounts(srv) {
        let op = srv.operator_key().await;
        let r = srv.send(Method::POST, "/api/v1/accounts", Some(&op),
            Some(json!({"name": "Initech", "email": "Bill@Initech.test", "plan": "pro"}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["account"]["id"].as_str().expect("id").to_owned();
        let key = r.body["api_key"].as_str().expect("first key").to_owned();
        assert_eq!(r.body["owner"]["username"], "bill@initech.test", "username is the lower-cased email");
        assert_eq!(r.body["account"]["plan"], "pro");
        assert_eq!(srv.get("/api/v1/auth/me", &key).await.status, 200);

        let dup = srv.send(Method::POST, "/api/v1/accounts", Some(&op),
            Some(json!({"name": "INITECH", "email": "x@y.test"}))).await;
        assert_eq!(dup.status, 409);
        assert_eq!(dup.error_code(), "conflict");

        let list = srv.get("/api/v1/accounts", &op).await;
        assert_eq!(list.status, 200);
        assert!(list.body.as_array().expect("array").iter().any(|a| a["id"] == id.as_str()));

        // Only an operator changes a plan.
        let self_upgrade = srv.send(Method::PATCH, &format!("/api/v1/accounts/{id}"), Some(&key),
            Some(json!({"plan": "enterprise"}))).await;
        assert_eq!(self_upgrade.status, 403);
        let rename = srv.send(Method::PATCH, &format!("/api/v1/accounts/{id}"), Some(&key),
            Some(json!({"name": "Initrode"}))).await;
        assert_eq!(rename.status, 200);
        assert_eq!(rename.body["name"], "Initrode");
        let replan = srv.send(Method::PATCH, &format!("/api/v1/accounts/{id}"), Some(&op),
            Some(json!({"plan": "scale"}))).await;
        assert_eq!(replan.body["plan"], "scale");

        // Disabling the account stops its keys at once.
        let off = srv.send(Method::PATCH, &format!("/api/v1/accounts/{id}"), Some(&op),
            Some(json!({"status": "disabled"}))).await;
        assert_eq!(off.status, 200);
        assert_eq!(srv.get("/api/v1/auth/me", &key).await.status, 401);
        let on = srv.send(Method::PATCH, &format!("/api/v1/accounts/{id}"), Some(&op),
            Some(json!({"status": "active"}))).await;
        assert_eq!(on.status, 200);
        assert_eq!(srv.get("/api/v1/auth/me", &key).await.status, 200);

        let del = srv.send(Method::DELETE, &format!("/api/v1/accounts/{id}"), Some(&op), None).await;
        assert_eq!(del.status, 200);
        assert_eq!(srv.get("/api/v1/auth/me", &key).await.status, 401);
        assert_eq!(srv.get(&format!("/api/v1/accounts/{id}"), &op).await.status, 404);
    }

    async fn account_keys_cannot_administer_other_accounts(srv) {
        let acme = srv.account("Acme").await;
        let globex = srv.account("Globex").await;
        let create = srv.send(Method::POST, "/api/v1/accounts", Some(&acme.key),
            Some(json!({"name": "Mine", "email": "m@m.test"}))).await;
        assert_eq!(create.status, 403);
        assert_eq!(srv.get("/api/v1/accounts", &acme.key).await.status, 403);
        for path in [format!("/api/v1/accounts/{}", globex.id), format!("/api/v1/accounts/{}/users", globex.id),
                     format!("/api/v1/accounts/{}/users/{}", globex.id, globex.user_id)] {
            let r = srv.get(&path, &acme.key).await;
            assert_eq!(r.status, 404, "{path} must not reveal the other account");
            assert_eq!(r.error_code(), "not_found");
        }
        let r = srv.send(Method::DELETE, &format!("/api/v1/accounts/{}/users/{}", globex.id, globex.user_id),
            Some(&acme.key), None).await;
        assert_eq!(r.status, 404);
    }

    async fn users_are_created_read_updated_listed_and_deleted(srv) {
        let acme = srv.account("Acme").await;
        let users = format!("/api/v1/accounts/{}/users", acme.id);
        let r = srv.send(Method::POST, &users, Some(&acme.key),
            Some(json!({"email": "John@Example.com", "username": "JohnDoe", "first_name": "John", "last_name": "Doe",
                        "password": "correct horse"}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["username"], "johndoe");
        assert_eq!(r.body["role"], "member");
        assert!(r.body.get("password").is_none());
        let uid = r.body["id"].as_str().expect("id").to_owned();

        let dup = srv.send(Method::POST, &users, Some(&acme.key),
            Some(json!({"email": "j2@example.com", "username": "JOHNDOE"}))).await;
        assert_eq!(dup.status, 409, "usernames are unique case-insensitively");

        let list = srv.get(&users, &acme.key).await;
        assert_eq!(list.header("x-total-count"), Some("2"));
        let r = srv.send(Method::PATCH, &format!("{users}/{uid}"), Some(&acme.key),
            Some(json!({"first_name": "Johnny", "role": "admin"}))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["first_name"], "Johnny");
        assert_eq!(r.body["role"], "admin");
        let short = srv.send(Method::PATCH, &format!("{users}/{uid}"), Some(&acme.key),
            Some(json!({"password": "short"}))).await;
        assert_eq!(short.status, 400);
        assert_eq!(short.body["error"]["details"]["field"], "password");

        let owner = srv.send(Method::DELETE, &format!("{users}/{}", acme.user_id), Some(&acme.key), None).await;
        assert_eq!(owner.status, 409, "the owner stays");
        let del = srv.send(Method::DELETE, &format!("{users}/{uid}"), Some(&acme.key), None).await;
        assert_eq!(del.status, 200);
        assert_eq!(srv.get(&format!("{users}/{uid}"), &acme.key).await.status, 404);
    }

    async fn managing_users_needs_an_admin_key(srv) {
        let acme = srv.account("Acme").await;
        let (writer, _) = srv.create_key(&acme.key, json!({"name": "rw", "scope": "write"})).await;
        let users = format!("/api/v1/accounts/{}/users", acme.id);
        assert_eq!(srv.get(&users, &writer).await.status, 200);
        let r = srv.send(Method::POST, &users, Some(&writer), Some(json!({"email": "a@b.test"}))).await;
        assert_eq!(r.status, 403);
    }
}
