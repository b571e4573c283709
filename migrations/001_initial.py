"""001_initial: the complete pfdb schema.

Generated with ``pfdb create-migration initial`` and reviewed: the partial index and the
PostgreSQL pattern index are written by hand (peewee-migrate cannot express them).
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create the complete pfdb schema: nine tables with their keys and indexes."""

    @migrator.create_model
    class Category(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        name = pw.CharField(max_length=255)
        slug = pw.CharField(max_length=255, unique=True)
        parent = pw.ForeignKeyField(column_name="parent_id", field="id", model="self", null=True, on_delete="RESTRICT")
        level = pw.IntegerField(default=0)
        path = pw.CharField(default="", index=True, max_length=1000)
        description = pw.TextField(null=True)
        sort_order = pw.IntegerField(default=0)
        is_active = pw.BooleanField(default=True)
        external_id = pw.CharField(max_length=100, null=True, unique=True)
        shopify_collection_id = pw.CharField(max_length=100, null=True)
        shopify_handle = pw.CharField(max_length=255, null=True)
        shopify_synced_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "categories"
            legacy_table_names = False

    @migrator.create_model
    class Configuration(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        key = pw.CharField(max_length=255, unique=True)
        value = pw.TextField(null=True)
        value_type = pw.CharField(default="string", max_length=10)
        description = pw.TextField(null=True)
        category = pw.CharField(index=True, max_length=100, null=True)
        is_sensitive = pw.BooleanField(default=False)

        class Meta:
            table_name = "configuration"
            legacy_table_names = False

    @migrator.create_model
    class Icon(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        category = pw.ForeignKeyField(
            column_name="category_id", field="id", model=migrator.orm["categories"], on_delete="CASCADE"
        )
        file_path = pw.CharField(max_length=1024, null=True)
        url = pw.CharField(max_length=2048, null=True)
        generation = pw.TextField(null=True)
        status = pw.CharField(default="pending", max_length=20)
        shopify_sync_status = pw.CharField(default="pending", max_length=20)
        shopify_image_id = pw.CharField(max_length=100, null=True)
        synced_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "icons"
            legacy_table_names = False

    @migrator.create_model
    class User(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        email = pw.CharField(max_length=255, unique=True)
        password_hash = pw.CharField(max_length=255)
        first_name = pw.CharField(max_length=100, null=True)
        last_name = pw.CharField(max_length=100, null=True)
        is_active = pw.BooleanField(default=True)
        is_admin = pw.BooleanField(default=False)
        last_login_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "users"
            legacy_table_names = False

    @migrator.create_model
    class Job(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        job_id = pw.UUIDField(unique=True)
        job_type = pw.CharField(max_length=50)
        status = pw.CharField(default="pending", max_length=20)
        progress = pw.IntegerField(default=0)
        current_step = pw.CharField(max_length=255, null=True)
        total_items = pw.IntegerField(null=True)
        processed_items = pw.IntegerField(default=0)
        parameters = pw.TextField(null=True)
        result = pw.TextField(null=True)
        error_message = pw.TextField(null=True)
        user = pw.ForeignKeyField(
            column_name="user_id", field="id", model=migrator.orm["users"], null=True, on_delete="SET NULL"
        )
        started_at = pw.DateTimeField(null=True)
        completed_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "jobs"
            legacy_table_names = False
            indexes = [(("status", "created_at"), False)]

    @migrator.create_model
    class Product(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        sku = pw.CharField(max_length=100, unique=True)
        name = pw.CharField(max_length=500)
        description = pw.TextField(null=True)
        price = pw.DecimalField(
            auto_round=False, decimal_places=2, max_digits=12, null=True, rounding="ROUND_HALF_EVEN"
        )
        compare_at_price = pw.DecimalField(
            auto_round=False, decimal_places=2, max_digits=12, null=True, rounding="ROUND_HALF_EVEN"
        )
        currency = pw.CharField(default="USD", max_length=3)
        brand = pw.CharField(max_length=255, null=True)
        manufacturer = pw.CharField(max_length=255, null=True)
        manufacturer_part_number = pw.CharField(max_length=100, null=True)
        gtin = pw.CharField(index=True, max_length=14, null=True)
        weight = pw.DecimalField(
            auto_round=False, decimal_places=3, max_digits=10, null=True, rounding="ROUND_HALF_EVEN"
        )
        inventory_quantity = pw.IntegerField(default=0)
        status = pw.CharField(default="draft", max_length=20)
        category = pw.ForeignKeyField(
            column_name="category_id", field="id", model=migrator.orm["categories"], null=True, on_delete="SET NULL"
        )
        shopify_product_id = pw.CharField(max_length=100, null=True)
        shopify_handle = pw.CharField(max_length=255, null=True)
        shopify_synced_at = pw.DateTimeField(null=True)
        shopify_sync_status = pw.CharField(default="pending", max_length=20)
        attributes = pw.TextField(null=True)

        class Meta:
            table_name = "products"
            legacy_table_names = False
            indexes = [(("category", "status"), False)]

    # Partial index: only products waiting for a Shopify sync are ever looked up this way.
    Product.add_index(
        pw.ModelIndex(
            Product,
            (Product.updated_at,),
            name="products_pending_sync",
            where=Product.shopify_sync_status == "pending",
        )
    )

    @migrator.create_model
    class ProductImage(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        product = pw.ForeignKeyField(
            column_name="product_id", field="id", model=migrator.orm["products"], on_delete="CASCADE"
        )
        url = pw.CharField(max_length=2048, null=True)
        local_path = pw.CharField(max_length=1024, null=True)
        content_hash = pw.CharField(max_length=64)
        width = pw.IntegerField(null=True)
        height = pw.IntegerField(null=True)
        alt_text = pw.CharField(max_length=500, null=True)
        position = pw.IntegerField(default=0)
        is_primary = pw.BooleanField(default=False)

        class Meta:
            table_name = "product_images"
            legacy_table_names = False
            indexes = [(("product", "content_hash"), True)]

    @migrator.create_model
    class SyncHistory(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        sync_type = pw.CharField(max_length=50)
        direction = pw.CharField(max_length=10)
        source = pw.CharField(max_length=1024, null=True)
        target = pw.CharField(max_length=1024, null=True)
        status = pw.CharField(default="running", max_length=20)
        started_at = pw.DateTimeField()
        completed_at = pw.DateTimeField(null=True)
        processed_count = pw.IntegerField(default=0)
        created_count = pw.IntegerField(default=0)
        updated_count = pw.IntegerField(default=0)
        failed_count = pw.IntegerField(default=0)
        error_details = pw.TextField(null=True)
        job = pw.ForeignKeyField(
            column_name="job_id", field="id", model=migrator.orm["jobs"], null=True, on_delete="SET NULL"
        )
        user = pw.ForeignKeyField(
            column_name="user_id", field="id", model=migrator.orm["users"], null=True, on_delete="SET NULL"
        )

        class Meta:
            table_name = "sync_history"
            legacy_table_names = False
            indexes = [(("sync_type", "started_at"), False)]

    @migrator.create_model
    class SystemLog(pw.Model):
        id = pw.AutoField()
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()
        level = pw.CharField(max_length=10)
        logger = pw.CharField(max_length=255, null=True)
        message = pw.TextField()
        module = pw.CharField(max_length=255, null=True)
        function = pw.CharField(max_length=255, null=True)
        line = pw.IntegerField(null=True)
        exception = pw.TextField(null=True)
        extra = pw.TextField(null=True)
        user = pw.ForeignKeyField(
            column_name="user_id", field="id", model=migrator.orm["users"], null=True, on_delete="SET NULL"
        )

        class Meta:
            table_name = "system_logs"
            legacy_table_names = False
            indexes = [(("level", "created_at"), False)]

    if isinstance(database, pw.PostgresqlDatabase):
        # Category subtrees are found with path LIKE '/1/5/%'; with a non-C collation
        # PostgreSQL serves that from an index only with the pattern operator class.
        migrator.sql('CREATE INDEX "categories_path_pattern" ON "categories" ("path" varchar_pattern_ops)')


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop every pfdb table, dependents first."""
    migrator.remove_model("system_logs")

    migrator.remove_model("sync_history")

    migrator.remove_model("product_images")

    migrator.remove_model("products")

    migrator.remove_model("jobs")

    migrator.remove_model("users")

    migrator.remove_model("icons")

    migrator.remove_model("configuration")

    migrator.remove_model("categories")
