use reqwest::StatusCode;

use crate::helpers::TestApp;

#[tokio::test]
async fn countries_are_listed_by_name_and_filtered_per_model() {
    let app = TestApp::spawn().await;
    let (s, all) = app.get_as("/v1/countries", &app.key).await;
    assert_eq!(s, StatusCode::OK);
    let all = all.as_array().expect("array").clone();
    assert_eq!(all.len(), 250);
    assert_eq!(
        &all[..5],
        &["AF", "AX", "AL", "DZ", "AS"].map(serde_json::Value::from)
    );
    let (_, aimode) = app.get_as("/v1/countries?model=aimode", &app.key).await;
    assert_eq!(aimode.as_array().map(Vec::len), Some(246));
    let (_, chatgpt) = app.get_as("/v1/countries?model=chatgpt", &app.key).await;
    let chatgpt = chatgpt.as_array().expect("array").clone();
    assert!(!chatgpt.contains(&"RU".into()));
    assert!(chatgpt.contains(&"CZ".into()));
    let (s, b) = app.get_as("/v1/countries?model=bing", &app.key).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(b["error"]["details"][0]["field"], "model");
}

#[tokio::test]
async fn states_need_a_country_and_only_the_us_has_them() {
    let app = TestApp::spawn().await;
    let (s, us) = app.get_as("/v1/states?country=US", &app.key).await;
    assert_eq!(s, StatusCode::OK);
    let us = us.as_array().expect("array").clone();
    assert_eq!(us.len(), 51);
    assert_eq!(
        us[0],
        serde_json::json!({ "code": "AL", "name": "Alabama" })
    );
    let (s, gb) = app.get_as("/v1/states?country=GB", &app.key).await;
    assert_eq!((s, gb), (StatusCode::OK, serde_json::json!([])));
    for q in ["", "?country=us", "?country=USA"] {
        let (s, b) = app.get_as(&format!("/v1/states{q}"), &app.key).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(b["error"]["details"][0]["field"], "country");
    }
}
