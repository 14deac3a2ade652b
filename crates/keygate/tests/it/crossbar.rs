//! The Crossbar conventions of seeds 000 and 001, exactly: envelopes, string error codes,
//! validation data, paging, and no empty bodies.

use reqwest::Method;
use serde_json::json;

use crate::harness::Resp;
use crate::on_both_backends;

fn assert_success_envelope(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["status"], "success", "{}", r.body);
    assert!(r.body["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(
        r.header("x-request-id"),
        r.body["request_id"].as_str(),
        "the header and the body name the same request"
    );
    assert!(r.body.get("data").is_some());
}

fn assert_error_envelope(r: &Resp, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.body["error"],
        status.to_string(),
        "the code as a string: {}",
        r.body
    );
    assert_eq!(r.body["message"], message);
    assert_eq!(r.body["status"], "error");
    assert!(r.body["request_id"].is_string());
    assert!(r.header("x-request-id").is_some());
}

on_both_backends! {
    async fn every_answer_is_an_envelope_with_the_token_echoed(srv) {
        let acme = srv.account("Acme").await;
        let (token, data) = srv.api_auth(&acme.key).await;
        assert_eq!(data["owner_id"], acme.user_id.as_str());
        let r = srv.v2(Method::GET, &format!("/v2/accounts/{}", acme.id), Some(&token), None).await;
        assert_success_envelope(&r, 200);
        assert_eq!(r.body["auth_token"], token.as_str());
        assert_eq!(r.body["data"]["id"], acme.id.as_str());
        assert_eq!(r.body["data"]["name"], "Acme");
        // A key works too (without a token to echo).
        let r = srv.client.get(format!("{}/v2/accounts/{}", srv.base, acme.id)).header("x-auth-token", &acme.key)
            .send().await.expect("send");
        let r = crate::harness::TestServer::read(r).await;
        assert_success_envelope(&r, 200);
        assert!(r.body.get("auth_token").is_none());
    }

    async fn errors_carry_the_code_as_a_string_and_validation_names_field_and_rule(srv) {
        let acme = srv.account("Acme").await;
        let r = srv.v2(Method::GET, &format!("/v2/accounts/{}", acme.id), None, None).await;
        assert_error_envelope(&r, 401, "unauthorized");
        let r = srv.v2(Method::GET, &format!("/v2/accounts/{}", acme.id), Some("eyJhbGciOiJSUzI1NiIs.bad.token"), None).await;
        assert_error_envelope(&r, 401, "unauthorized");
        let r = srv.v2(Method::PUT, "/v2/api_auth", None, Some(json!({"data": {"api_key": "ak_live_not_a_real_key"}}))).await;
        assert_error_envelope(&r, 401, "unauthorized");
        let r = srv.v2(Method::PUT, "/v2/api_auth", None, Some(json!({"data": {}}))).await;
        assert_error_envelope(&r, 400, "invalid data");
        assert!(r.body["data"]["api_key"]["required"].is_string(), "{}", r.body);
        let r = srv.v2(Method::PUT, "/v2/api_auth", None, Some(json!({"api_key": "unwrapped"}))).await;
        assert_error_envelope(&r, 400, "invalid data");
        assert!(r.body["data"]["data"].is_object(), "{}", r.body);
        let (token, _) = srv.api_auth(&acme.key).await;
        let r = srv.v2(Method::PUT, &format!("/v2/accounts/{}/users", acme.id), Some(&token),
            Some(json!({"data": {"first_name": "No", "last_name": "Email"}}))).await;
        assert_error_envelope(&r, 400, "invalid data");
        assert!(r.body["data"]["email"]["required"].is_string(), "{}", r.body);
        let r = srv.v2(Method::PUT, &format!("/v2/accounts/{}/users", acme.id), Some(&token),
            Some(json!({"data": {"email": "not-an-email"}}))).await;
        assert_error_envelope(&r, 400, "invalid data");
        assert!(r.body["data"]["email"].is_object(), "{}", r.body);
        let r = srv.v2(Method::GET, "/v2/no/such/route", Some(&token), None).await;
        assert_error_envelope(&r, 404, "not found");
        let r = srv.v2(Method::POST, "/v2/api_auth", None, None).await;
        assert_error_envelope(&r, 405, "method not allowed");
        let r = srv.client.put(format!("{}/v2/api_auth", srv.base)).header("content-type", "application/json")
            .body("{\"data\": ").send().await.expect("send");
        assert_error_envelope(&crate::harness::TestServer::read(r).await, 400, "invalid data");
    }

    async fn another_accounts_resources_are_forbidden(srv) {
        let acme = srv.account("Acme").await;
        let globex = srv.account("Globex").await;
        let (token, _) = srv.api_auth(&acme.key).await;
        for path in [format!("/v2/accounts/{}", globex.id), format!("/v2/accounts/{}/users", globex.id),
                     format!("/v2/accounts/{}/users/{}", globex.id, globex.user_id),
                     format!("/v2/accounts/{}/api_key", globex.id)] {
            let r = srv.v2(Method::GET, &path, Some(&token), None).await;
            assert_error_envelope(&r, 403, "forbidden");
        }
        let r = srv.v2(Method::DELETE, &format!("/v2/accounts/{}/users/{}", globex.id, globex.user_id), Some(&token), None).await;
        assert_error_envelope(&r, 403, "forbidden");
    }

    async fn users_are_listed_created_read_updated_and_deleted_the_crossbar_way(srv) {
        let acme = srv.account("Acme").await;
        let (token, _) = srv.api_auth(&acme.key).await;
        let users = format!("/v2/accounts/{}/users", acme.id);
        let r = srv.v2(Method::PUT, &users, Some(&token), Some(json!({"data": {
            "first_name": "John", "last_name": "Doe", "email": "john@example.com", "username": "johndoe"}}))).await;
        assert_success_envelope(&r, 201);
        let id = r.body["data"]["id"].as_str().expect("id").to_owned();
        assert_eq!(r.body["data"]["priv_level"], "user");

        let all = srv.v2(Method::GET, &format!("{users}?paginate=false"), Some(&token), None).await;
        assert_success_envelope(&all, 200);
        let list = all.body["data"].as_array().expect("array");
        assert_eq!(list.len(), 2);
        let john = list.iter().find(|u| u["id"] == id.as_str()).expect("john listed");
        for field in ["id", "first_name", "last_name", "email", "username"] {
            assert!(john[field].is_string(), "{field}");
        }

        let r = srv.v2(Method::POST, &format!("{users}/{id}"), Some(&token),
            Some(json!({"data": {"first_name": "Johnny", "priv_level": "admin"}}))).await;
        assert_success_envelope(&r, 200);
        assert_eq!(r.body["data"]["first_name"], "Johnny");
        assert_eq!(r.body["data"]["priv_level"], "admin");
        let r = srv.v2(Method::PATCH, &format!("{users}/{id}"), Some(&token), Some(json!({"data": {"last_name": "D."}}))).await;
        assert_success_envelope(&r, 200);
        assert_eq!(r.body["data"]["last_name"], "D.");
        assert_eq!(r.body["data"]["first_name"], "Johnny");
        let r = srv.v2(Method::GET, &format!("{users}/{id}"), Some(&token), None).await;
        assert_success_envelope(&r, 200);

        let r = srv.v2(Method::DELETE, &format!("{users}/{id}"), Some(&token), None).await;
        assert_success_envelope(&r, 200);
        assert_eq!(r.body["data"]["id"], id.as_str(), "DELETE answers with the deleted user, not an empty body");
        let r = srv.v2(Method::GET, &format!("{users}/{id}"), Some(&token), None).await;
        assert_error_envelope(&r, 404, "not found");
    }

    async fn lists_page_with_page_size_and_start_key(srv) {
        let acme = srv.account("Acme").await;
        let (token, _) = srv.api_auth(&acme.key).await;
        let users = format!("/v2/accounts/{}/users", acme.id);
        for i in 0..4 {
            let r = srv.v2(Method::PUT, &users, Some(&token), Some(json!({"data": {"email": format!("u{i}@example.com")}}))).await;
            assert_eq!(r.status, 201);
        }
        let mut seen = Vec::new();
        let mut next = Some(format!("{users}?page_size=2"));
        while let Some(path) = next.take() {
            let r = srv.v2(Method::GET, &path, Some(&token), None).await;
            assert_success_envelope(&r, 200);
            let page = r.body["data"].as_array().expect("array");
            assert!(page.len() <= 2);
            assert_eq!(r.body["page_size"], page.len());
            seen.extend(page.iter().map(|u| u["id"].as_str().expect("id").to_owned()));
            next = r.body["next_start_key"].as_str().map(|k| format!("{users}?page_size=2&start_key={k}"));
        }
        assert_eq!(seen.len(), 5, "four users and the owner, each once");
        let r = srv.v2(Method::GET, &format!("{users}?page_size=0"), Some(&token), None).await;
        assert_error_envelope(&r, 400, "invalid data");
    }

    async fn the_account_api_key_is_shown_by_its_start_and_recreated_with_put(srv) {
        let acme = srv.account("Acme").await;
        let (token, _) = srv.api_auth(&acme.key).await;
        let path = format!("/v2/accounts/{}/api_key", acme.id);
        let r = srv.v2(Method::GET, &path, Some(&token), None).await;
        assert_success_envelope(&r, 200);
        assert_eq!(r.body["data"]["start"], &acme.key[..12]);
        let r = srv.v2(Method::PUT, &path, Some(&token), None).await;
        assert_success_envelope(&r, 201);
        let new_key = r.body["data"]["api_key"].as_str().expect("the new key, once").to_owned();
        assert_ne!(new_key, acme.key);
        assert_eq!(srv.get("/api/v1/auth/me", &acme.key).await.status, 401, "the old key stops at once");
        assert_eq!(srv.get("/api/v1/auth/me", &new_key).await.status, 200);
        let (_, data) = srv.api_auth(&new_key).await;
        assert_eq!(data["account_id"], acme.id.as_str());
        let r = srv.v2(Method::GET, &path, Some(&token), None).await;
        assert_eq!(r.status, 401, "the token of the replaced key goes with it");
    }

    async fn an_account_is_updated_with_post(srv) {
        let acme = srv.account("Acme").await;
        let (token, _) = srv.api_auth(&acme.key).await;
        let r = srv.v2(Method::POST, &format!("/v2/accounts/{}", acme.id), Some(&token),
            Some(json!({"data": {"name": "Acme Corp"}}))).await;
        assert_success_envelope(&r, 200);
        assert_eq!(r.body["data"]["name"], "Acme Corp");
    }
}
