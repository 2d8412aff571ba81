# ModelCall moves to the ledger app (ledger/0001) with its table and rows: here it only leaves runs' state.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("runs", "0013_model_calls")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ModelCall")], database_operations=[]
        ),
    ]
